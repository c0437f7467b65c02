#!/usr/bin/env bash
# Measures what one streamer uses at each resolution and frame rate, to set
# the reservations in jobs/streamer.nomad.hcl (local.reservations):
#
#   tools/measure-reservations.sh [seconds per mode, default 30] [streams, default 2]
#
# Each mode runs that many `metal streamer -demo` at once (the moving demo
# scene with its tone, x264: the worst case; NVENC moves the encode off the
# CPU), each in its own session with its Xvfb and PulseAudio, as Nomad packs
# them on a node. It samples the CPU of all their process trees every second
# from /proc and prints, per stream, the median and 95th percentile in
# Nomad's MHz (fraction of a core × this CPU's MHz) and the peak RSS. Run it
# on an otherwise idle machine; figures vary with the CPU.
set -euo pipefail
secs=${1:-30}
streams=${2:-2}
root=$(cd "$(dirname "$0")/.." && pwd)
bin=$root/bin/metal
[[ -x $bin ]] || { echo "build bin/metal first (make build)" >&2; exit 1; }
mhz=$(awk -F: '/cpu MHz/ {print int($2); exit}' /proc/cpuinfo)
hz=$(getconf CLK_TCK)
echo "$streams streams at once, per stream:"
printf '%-14s %10s %10s %10s\n' mode cpu_p50 cpu_p95 rss_mib
for mode in ${MODES:-1280x720@30 1280x720@60 1920x1080@30 1920x1080@60}; do
	res=${mode%@*} fps=${mode#*@}
	pids=()
	for _ in $(seq "$streams"); do
		setsid "$bin" streamer -demo -resolution "$res" -fps "$fps" -listen 127.0.0.1:0 -idle-timeout 0 >/dev/null 2>&1 &
		pids+=($!)
	done
	sleep 5 # start-up: Xvfb, PulseAudio, pipelines
	# stat fields after "(comm) ": state ppid pgrp session ... utime(12) stime(13)
	sids=" ${pids[*]} "
	ticks() { cat /proc/[0-9]*/stat 2>/dev/null | sed 's/^.*) //' | awk -v sids="$sids" 'index(sids, " " $4 " ") {t += $12 + $13} END {print t + 0}'; }
	rss() { # the largest stream's process tree
		local best=0 sid d total
		for sid in "${pids[@]}"; do
			total=0
			for d in /proc/[0-9]*; do
				[[ $(sed 's/^.*) //' "$d/stat" 2>/dev/null | awk '{print $4}') == "$sid" ]] || continue
				total=$((total + $(awk '/VmRSS/ {print $2}' "$d/status" 2>/dev/null || echo 0)))
			done
			((total > best)) && best=$total
		done
		echo $((best / 1024))
	}
	samples=() peak=0 prev=$(ticks)
	for _ in $(seq "$secs"); do
		sleep 1
		now=$(ticks)
		samples+=($(((now - prev) * mhz / hz / streams)))
		prev=$now
		r=$(rss); ((r > peak)) && peak=$r
	done
	for pid in "${pids[@]}"; do
		kill -TERM -- -"$pid" 2>/dev/null || true
	done
	wait "${pids[@]}" 2>/dev/null || true
	sorted=($(printf '%s\n' "${samples[@]}" | sort -n))
	n=${#sorted[@]}
	printf '%-14s %10s %10s %10s\n' "$mode" "${sorted[$((n / 2))]}" "${sorted[$((n * 95 / 100))]}" "$peak"
done
