#!/usr/bin/env bash
# GPU check: one command, well under 10 minutes, for a machine with an NVIDIA
# GPU and driver. It runs Metal's device plugin through a real Nomad against
# the real driver, prints what Nomad fingerprints (an H100, H200 or A100 must
# show nvenc_h264=false, so no stream is placed there), and prints which
# encoder the streamer picks on the machine.
#
#   tools/gpu-check.sh            # builds what it needs (Go, module proxy)
#   METAL_GPU_CHECK_PREBUILT=1 tools/gpu-check.sh   # uses bin/ as carried
#
# Prebuilt use (a machine without Go): run `make tools build` and
# `go test -c -tags gpucheck -o bin/e2e.test ./e2e` elsewhere, copy the repository with bin/
# (dereferenced), then run with METAL_GPU_CHECK_PREBUILT=1.
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
fi
export METAL_NOMAD_BIN=$root/bin/nomad METAL_CONSUL_BIN=$root/bin/consul
export METAL_NVIDIA_PLUGIN_DIR=$root/bin/plugins METAL_BIN=$root/bin/metal
# The e2e binary moves itself into a private network namespace when root.
(cd e2e && timeout 480 ../bin/e2e.test -test.run '^TestRealGPU$' -test.v -test.count=1 2>&1) | grep -E 'GPU CHECK|encoder|PASS|FAIL|ok|---'
echo "==> GPU check finished in $(($(date +%s) - start))s"
