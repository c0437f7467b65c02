#!/usr/bin/env bash
# Builds the pinned agent and tool binaries from their wrapper modules
# (tools/<name>/go.mod) and links them into bin/.
#
#   tools/build.sh nomad consul tofu nvidia-plugin buildx
#
# Each build is cached under $METAL_CACHE (default ~/.cache/metal) by a key
# over the wrapper's go.mod, go.sum and `go version`: the first build takes
# minutes, every later run only checks the key.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cache=${METAL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/metal}
mkdir -p "$root/bin" "$cache/tools"

for name in "$@"; do
	case $name in
	nomad) pkg=github.com/hashicorp/nomad ;;
	consul) pkg=github.com/hashicorp/consul ;;
	tofu) pkg=github.com/opentofu/opentofu/cmd/tofu ;;
	nvidia-plugin) pkg=. ;;
	buildx) pkg=github.com/docker/buildx/cmd/buildx ;;
	*)
		echo "tools/build.sh: unknown tool $name" >&2
		exit 2
		;;
	esac
	dir=$root/tools/$name
	# The key covers the wrapper's module files and, for Metal's own plugin,
	# its source: a changed plugin must never be served from the cache.
	src=()
	[[ $name == nvidia-plugin ]] && src=("$dir"/*.go)
	key=$({ cat "$dir/go.mod" "$dir/go.sum" "${src[@]}"; go version; } | sha256sum | cut -c1-16)
	bin=$name
	[[ $name == nvidia-plugin ]] && bin=metal-nvidia
	out=$cache/tools/$name-$key/$bin
	if [[ -x $out ]]; then
		echo "==> $name: cached ($out)"
	else
		echo "==> $name: building $pkg (cold: a few minutes on 2 cores; cached afterwards)"
		start=$(date +%s)
		mkdir -p "$(dirname "$out")"
		# -mod=readonly: the wrapper's go.mod and go.sum are committed and complete.
		# go-nvml's generated cgo warns about NVML's own deprecations.
		(cd "$dir" && CGO_CFLAGS="-O2 -g -Wno-deprecated-declarations" GOFLAGS=-mod=readonly go build -o "$out.tmp" "$pkg")
		mv "$out.tmp" "$out"
		echo "==> $name: built in $(($(date +%s) - start))s"
	fi
	if [[ $name == nvidia-plugin ]]; then
		# Nomad runs every file in its plugin_dir: give the plugin a dir of its own.
		ln -sfn "$(dirname "$out")" "$root/bin/plugins"
	else
		ln -sfn "$out" "$root/bin/$name"
	fi
done
