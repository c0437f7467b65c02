// Command metal-nvidia is a Nomad device plugin that reports NVIDIA GPUs
// with their video-encoder capabilities (nvenc_h264, nvenc_hevc, nvenc_av1,
// encoder_engines, encoder_sessions_max), each NVENC GPU as several encoder
// slots ("<uuid>/slot-<k>") so that Nomad places several streams on one GPU
// and never more than it can encode. Load (utilisation, sessions, NVML's
// remaining encoder capacity) goes to stats only. Without an NVIDIA driver
// it reports no devices.
//
// For GPU-less machines it reads device descriptions from a directory
// (fake_dir), so CI exercises real Nomad placement with devices.
package main

import (
	log "github.com/hashicorp/go-hclog"
	"github.com/hashicorp/nomad/plugins"
)

func main() {
	plugins.Serve(func(l log.Logger) interface{} { return NewPlugin(l) })
}
