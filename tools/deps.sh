#!/usr/bin/env bash
# Installs the Debian packages Metal's dev cluster, streamer and tests need,
# skipping those already installed. Safe to run again.
set -euo pipefail

pkgs=(
	# streamer: GStreamer 1.22 and its plugins (x264enc is in -ugly, nvcodec in -bad)
	pkg-config libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev gstreamer1.0-tools
	gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
	gstreamer1.0-plugins-ugly gstreamer1.0-x gstreamer1.0-pulseaudio
	# streamer: display, input injection, RandR resize, clipboard (xclip) and audio
	xvfb x11-utils x11-apps x11-xserver-utils xdotool xclip libx11-dev libxtst-dev libxfixes-dev libxrandr-dev pulseaudio
	# make dev's desktop: a window manager, a terminal, Mesa's llvmpipe for GL
	openbox xterm libgl1-mesa-dri libglx-mesa0 mesa-utils
	# browser tests
	chromium fonts-dejavu-core
	# TURN comparison and network-namespace tests
	coturn iproute2 procps util-linux
	# container images without a registry (tools/base-image.sh)
	debootstrap curl
)

missing=()
for p in "${pkgs[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
		missing+=("$p")
	fi
done

if ((${#missing[@]} == 0)); then
	echo "==> Debian packages: all ${#pkgs[@]} present"
	exit 0
fi

sudo=()
if [[ $(id -u) -ne 0 ]]; then
	sudo=(sudo)
fi
echo "==> Debian packages: installing ${#missing[@]}: ${missing[*]}"
"${sudo[@]}" apt-get update
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y --no-install-recommends "${missing[@]}"
echo "==> Debian packages: done"
