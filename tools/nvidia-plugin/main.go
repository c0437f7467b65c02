// Command metal-nvidia is a Nomad device plugin that reports NVIDIA GPUs
// with their video-encoder facts (nvenc_h264, nvenc_hevc, nvenc_av1,
// encoder_capacity), so that job constraints can require a GPU that can
// encode a stream. Without an NVIDIA driver it reports no devices.
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
