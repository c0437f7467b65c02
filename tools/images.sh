#!/usr/bin/env bash
# Builds Metal's container images from images/Dockerfile into the local
# Docker engine and prints each one's size against its budget and how long
# it took to build:
#
#   tools/images.sh            # metal:dev and metal-desktop:dev
#   tools/images.sh metal      # one of them
#
# Where no registry is reachable, the base image (debian:bookworm-slim) is
# built from Debian's packages first (tools/base-image.sh). BuildKit comes
# from `docker buildx` when the Docker CLI has it, otherwise from the pinned
# buildx that tools/build.sh builds from the Go module proxy (Debian 12's
# Docker has none). Exits non-zero when an image is over its budget.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
tag=${METAL_IMAGE_TAG:-dev}
targets=("$@")
((${#targets[@]})) || targets=(metal metal-desktop)

# Size budgets (issue #17), in MB as Docker counts them (10^6 bytes).
declare -A budget=([metal]=120 [metal-desktop]=1200)

command -v docker >/dev/null || { echo "images: docker is missing (Debian: apt-get install docker.io)" >&2; exit 1; }
docker info >/dev/null 2>&1 || { echo "images: the Docker engine does not answer (is dockerd running, and may this user reach it?)" >&2; exit 1; }
# The base: kept while its key holds (a few hundred bytes fetched), built
# or imported again when it changes (tools/base-image.sh).
tools/base-image.sh >/dev/null

if docker buildx version >/dev/null 2>&1; then
	buildx=(docker buildx)
else
	tools/build.sh buildx >&2
	buildx=("$root/bin/buildx")
fi

# The host's CA bundle goes to the build as a secret (never into an image):
# where a proxy inspects TLS, its CA is in there, and the build's downloads
# (the Go toolchain and modules) need it.
ca=()
bundle=${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}
[[ -s $bundle ]] && ca=(--secret "id=ca,src=$bundle")
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
version=$(git describe --tags --always --dirty 2>/dev/null || echo dev)
status=0
for target in "${targets[@]}"; do
	[[ -n ${budget[$target]:-} ]] || { echo "images: unknown image $target (metal, metal-desktop)" >&2; exit 2; }
	start=$(date +%s%N)
	echo "==> image $target:$tag" >&2
	"${buildx[@]}" build --progress "${METAL_BUILD_PROGRESS:-quiet}" --load \
		-f images/Dockerfile --target "$target" "${ca[@]}" \
		--build-arg VERSION="$version" --build-arg REVISION="$revision" \
		-t "$target:$tag" . >&2
	secs=$(awk -v a="$start" -v b="$(date +%s%N)" 'BEGIN { printf "%.1f", (b - a) / 1e9 }')
	bytes=$(docker image inspect -f '{{.Size}}' "$target:$tag")
	mb=$((bytes / 1000000))
	verdict="within"
	if ((mb > budget[$target])); then
		verdict="OVER"
		status=1
	fi
	printf '==> %s:%s: %d MB (%s the %d MB budget), built in %s s\n' "$target" "$tag" "$mb" "$verdict" "${budget[$target]}" "$secs"
done
exit $status
