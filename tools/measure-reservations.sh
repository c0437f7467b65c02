#!/usr/bin/env bash
# Measures what one streamer uses at each resolution and frame rate, to set
# the reservations in jobs/streamer.nomad.hcl (local.reservations):
#
#   tools/measure-reservations.sh [seconds per mode, default 30]
#
# Each mode runs `metal streamer -demo` (the moving demo scene, x264: the
# worst case; NVENC moves the encode off the CPU) in its own session with its
# Xvfb and PulseAudio, samples the CPU of the whole process tree every
# second from /proc, and prints the median and 95th percentile in Nomad's
# MHz (fraction of a core × this CPU's MHz) and the peak RSS. Run it on an
# otherwise idle machine; figures vary with the CPU.
set -euo pipefail
secs=${1:-30}
root=$(cd "$(dirname "$0")/.." && pwd)
bin=$root/bin/metal
[[ -x $bin ]] || { echo "build bin/metal first (make build)" >&2; exit 1; }
mhz=$(awk -F: '/cpu MHz/ {print int($2); exit}' /proc/cpuinfo)
hz=$(getconf CLK_TCK)
printf '%-14s %10s %10s %10s\n' mode cpu_p50 cpu_p95 rss_mib
for mode in ${MODES:-1280x720@30 1280x720@60 1920x1080@30 1920x1080@60}; do
	res=${mode%@*} fps=${mode#*@}
	setsid "$bin" streamer -demo -resolution "$res" -fps "$fps" -listen 127.0.0.1:0 -idle-timeout 0 >/dev/null 2>&1 &
	pid=$!
	sleep 5 # start-up: Xvfb, PulseAudio, pipelines
	# stat fields after "(comm) ": state ppid pgrp session ... utime(12) stime(13)
	ticks() { cat /proc/[0-9]*/stat 2>/dev/null | sed 's/^.*) //' | awk -v sid="$1" '$4 == sid {t += $12 + $13} END {print t + 0}'; }
	rss() {
		local total=0 d
		for d in /proc/[0-9]*; do
			[[ $(sed 's/^.*) //' "$d/stat" 2>/dev/null | awk '{print $4}') == "$1" ]] || continue
			total=$((total + $(awk '/VmRSS/ {print $2}' "$d/status" 2>/dev/null || echo 0)))
		done
		echo $((total / 1024))
	}
	samples=() peak=0 prev=$(ticks "$pid")
	for _ in $(seq "$secs"); do
		sleep 1
		now=$(ticks "$pid")
		samples+=($(((now - prev) * mhz / hz)))
		prev=$now
		r=$(rss "$pid"); ((r > peak)) && peak=$r
	done
	kill -TERM -- -"$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	sorted=($(printf '%s\n' "${samples[@]}" | sort -n))
	n=${#sorted[@]}
	printf '%-14s %10s %10s %10s\n' "$mode" "${sorted[$((n / 2))]}" "${sorted[$((n * 95 / 100))]}" "$peak"
done
