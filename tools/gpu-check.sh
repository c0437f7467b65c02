#!/usr/bin/env bash
# GPU check: one command, well under 10 minutes, for a machine with an NVIDIA
# GPU and driver. It runs Metal's device plugin through a real Nomad against
# the real driver and prints what Nomad fingerprints (an H100, H200 or A100
# must show nvenc_h264=false, so no stream is placed there). On a GPU with
# NVENC (T4, A10, L4, L40S, RTX) it then starts a session through the
# gateway as a player does: Nomad places it on an encoder slot, the streamer
# runs NVENC (or fails), Chromium decodes it; and it prints glass-to-glass
# and capture-to-encoded at 720p30 and 720p60 with the encoder named. Without
# NVENC it prints "no NVENC on this machine", the encoder a streamer picks
# (x264enc) and why NVENC was not chosen, and the same figures for x264.
#
#   tools/gpu-check.sh            # builds what it needs (Go, module proxy)
#   METAL_GPU_CHECK_PREBUILT=1 tools/gpu-check.sh   # uses bin/ as carried
#
# Prebuilt use (a machine without Go): run `make tools build`,
# `go test -c -tags gpucheck -o bin/e2e.test ./e2e` and
# `go test -c -o bin/streamer.test ./streamer` elsewhere, copy the repository
# with bin/ (dereferenced), then run with METAL_GPU_CHECK_PREBUILT=1.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
start=$(date +%s)
echo "==> GPUs (nvidia-smi)"
nvidia-smi -L || echo "nvidia-smi not available"
nvidia-smi --query-gpu=name,memory.total,driver_version,encoder.stats.sessionCount --format=csv || true

if [[ ${METAL_GPU_CHECK_PREBUILT:-0} != 1 ]]; then
	tools/build.sh nomad consul nvidia-plugin
	go build -o bin/metal ./cmd/metal
	go test -c -tags gpucheck -o bin/e2e.test ./e2e
	go test -c -o bin/streamer.test ./streamer
fi
# A check that would skip (no Chromium, no root) fails instead.
export CI=true
export METAL_NOMAD_BIN=$root/bin/nomad METAL_CONSUL_BIN=$root/bin/consul
export METAL_NVIDIA_PLUGIN_DIR=$root/bin/plugins METAL_BIN=$root/bin/metal
# The e2e binary moves itself into a private network namespace when root.
out=$(mktemp)
trap 'rm -f "$out"' EXIT
status=0
(cd e2e && timeout 300 ../bin/e2e.test -test.run '^TestRealGPU$' -test.v -test.count=1 >"$out" 2>&1) || status=$?
# The check's own lines, its failures with their reasons, and the verdict.
grep -E 'GPU CHECK|_test\.go:[0-9]+:|^(--- |PASS|FAIL|ok)' "$out" || tail -n 40 "$out"
encoder=nvenc
if grep -q 'GPU CHECK no NVENC' "$out"; then encoder=x264enc; fi
echo "==> figures with $encoder (720p30 and 720p60, one run each with playout-delay 0 and default, 6 s each)"
# Each figure line starts with its configuration and names the encoder that
# ran; a missing line (a failed run) fails the check.
figures=$(cd streamer && METAL_BENCH_ENCODER=$encoder METAL_BENCH_RUNS=1 METAL_BENCH_WINDOW=6s timeout 240 \
	../bin/streamer.test -test.run '^$' -test.bench 'BenchmarkStreamer/720p(30|60)$' -test.benchtime 1x 2>&1) || status=1
grep -E '^720p|_test\.go:[0-9]+:|FAIL' <<<"$figures" || true
[[ $(grep -c '^720p' <<<"$figures") == 4 ]] || status=1
echo "==> GPU check finished in $(($(date +%s) - start))s (exit $status)"
exit $status
