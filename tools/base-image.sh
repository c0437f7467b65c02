#!/usr/bin/env bash
# Builds the Debian 12 base image the Dockerfiles start FROM
# (debian:bookworm-slim) from Debian's own packages with debootstrap, and
# imports it into the local Docker engine under that exact name, so that
# `docker build` works on a machine that reaches no container registry.
# Where a registry is reachable the official image serves just as well;
# this script never pulls.
#
# The result is cached by a key (this script's hash, the suite, the mirror
# and the day's snapshot of the archive's Release file): an engine that
# already holds the image with this key is left alone; otherwise the root
# file system tarball cached under ~/.cache/metal/base is imported again;
# only without it does debootstrap run (about a minute and a half).
#
#   tools/base-image.sh            # prints the image name when ready
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
image=debian:bookworm-slim
suite=bookworm
mirror=${METAL_DEBIAN_MIRROR:-http://deb.debian.org/debian}
security=${METAL_DEBIAN_SECURITY:-http://deb.debian.org/debian-security}
cache=${XDG_CACHE_HOME:-$HOME/.cache}/metal/base
mkdir -p "$cache"

command -v docker >/dev/null || { echo "base-image: docker is missing" >&2; exit 1; }
# The key changes with this script and with the suite's packages: the
# Release file's Date line moves whenever the archive publishes updates
# (fetched as a few hundred bytes; unreachable, the cached tarball stands).
release=$(curl -fsS --max-time 20 -r 0-2047 "$mirror/dists/$suite/Release" 2>/dev/null | sed -n 's/^Date: //p' || true)
key=$( { sha256sum "$0" | cut -c1-16; echo "$suite $mirror $release"; } | sha256sum | cut -c1-16)
if [[ -z $release ]]; then
	# Offline: whatever the engine or the cache holds for this script.
	have=$(docker image inspect -f '{{index .Config.Labels "org.metal-stream.base-key"}}' "$image" 2>/dev/null || true)
	if [[ -n $have ]]; then echo "$image"; exit 0; fi
	latest=$(ls -t "$cache"/*.tar.gz 2>/dev/null | head -n1 || true)
	[[ -n $latest ]] || { echo "base-image: $mirror unreachable and nothing cached" >&2; exit 1; }
	key=$(basename "$latest" .tar.gz)
fi
tarball=$cache/$key.tar.gz

have=$(docker image inspect -f '{{index .Config.Labels "org.metal-stream.base-key"}}' "$image" 2>/dev/null || true)
if [[ $have == "$key" ]]; then
	echo "$image"
	exit 0
fi
# An image of that name this script did not build (the official one, from
# a registry) is used as it is, unless METAL_BASE_REBUILD=1.
if [[ -z $have && ${METAL_BASE_REBUILD:-0} != 1 ]] && docker image inspect "$image" >/dev/null 2>&1; then
	echo "==> base image: using the engine's $image (not built here; METAL_BASE_REBUILD=1 replaces it)" >&2
	echo "$image"
	exit 0
fi
# debootstrap, apt and the root filesystem's files need root: the script
# runs itself again under sudo when not root (only now: a cached image
# needs no root), as tools/deps.sh uses sudo.
if [[ $(id -u) -ne 0 ]]; then
	exec sudo -E "$0" "$@"
fi

if [[ ! -s $tarball ]]; then
	command -v debootstrap >/dev/null || {
		echo "==> base image: installing debootstrap" >&2
		DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends debootstrap >&2
	}
	tmp=$(mktemp -d /var/tmp/metal-base.XXXXXX)
	trap 'rm -rf "$tmp"' EXIT
	rootfs=$tmp/rootfs
	echo "==> base image: debootstrap --variant=minbase $suite from $mirror" >&2
	debootstrap --variant=minbase "$suite" "$rootfs" "$mirror" >"$tmp/debootstrap.log" 2>&1 || {
		tail -n 30 "$tmp/debootstrap.log" >&2
		exit 1
	}
	# As the official slim image: apt sources for updates and security, no
	# documentation, manuals or translations (now or from later installs),
	# no apt lists or caches, and no machine identity.
	rm -f "$rootfs/etc/apt/sources.list"
	cat >"$rootfs/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $mirror
Suites: $suite $suite-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $security
Suites: $suite-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
	cat >"$rootfs/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EOF
	cat >"$rootfs/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
	echo 'Acquire::Languages "none";' >"$rootfs/etc/apt/apt.conf.d/docker-no-languages"
	echo 'APT::Install-Recommends "false";' >"$rootfs/etc/apt/apt.conf.d/docker-no-recommends"
	find "$rootfs/usr/share/doc" -mindepth 2 -not -name copyright -not -type d -delete
	find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
	rm -rf "$rootfs"/usr/share/{man,groff,info,lintian,linda}/* \
		"$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
		"$rootfs"/var/log/* "$rootfs"/tmp/* "$rootfs"/var/tmp/*
	find "$rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
	: >"$rootfs/etc/machine-id"
	rm -f "$rootfs/etc/hostname" "$rootfs/etc/resolv.conf"
	tar --numeric-owner -C "$rootfs" -czf "$tarball.tmp" .
	mv "$tarball.tmp" "$tarball"
	# Older tarballs are superseded.
	find "$cache" -name '*.tar.gz' -not -name "$key.tar.gz" -delete
fi

echo "==> base image: importing $image (key $key)" >&2
docker import \
	--change 'CMD ["bash"]' \
	--change "LABEL org.metal-stream.base-key=$key" \
	--change 'LABEL org.opencontainers.image.description="Debian 12 minbase, slimmed as debian:bookworm-slim, built by tools/base-image.sh"' \
	"$tarball" "$image" >/dev/null
echo "$image"
