package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// GPU is one device as the plugin reports it.
type GPU struct {
	ID              string `json:"id"` // UUID, what NVIDIA_VISIBLE_DEVICES takes
	Model           string `json:"model"`
	MemoryMiB       int64  `json:"memory_mib"`
	Driver          string `json:"driver_version"`
	NVENCH264       bool   `json:"nvenc_h264"`
	NVENCHEVC       bool   `json:"nvenc_hevc"`
	NVENCAV1        bool   `json:"nvenc_av1"`
	EncoderCapacity int64  `json:"encoder_capacity"` // NVML H.264 encoder capacity, 0-100
	PCIBusID        string `json:"pci_bus_id,omitempty"`
	Healthy         *bool  `json:"healthy,omitempty"`
	// EncoderUtilization is the current encoder load in percent (stats).
	EncoderUtilization int64 `json:"encoder_utilization,omitempty"`
	EncoderSessions    int64 `json:"encoder_sessions,omitempty"`
}

// Source lists GPUs: NVML on a real machine, a directory on a fake one.
type Source interface {
	GPUs() ([]GPU, error)
}

// ErrNoDriver means there is no NVIDIA driver: the plugin reports no devices.
var ErrNoDriver = errors.New("no NVIDIA driver")

// dirSource reads one JSON file per GPU from a directory:
//
//	{"id": "GPU-a", "model": "RTX A4000", "memory_mib": 16376, "nvenc_h264": true}
type dirSource struct {
	dir string
}

func (d dirSource) GPUs() ([]GPU, error) {
	files, err := filepath.Glob(filepath.Join(d.dir, "*.json"))
	if err != nil {
		return nil, err
	}
	sort.Strings(files)
	var out []GPU
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", f, err)
		}
		var g GPU
		if err := json.Unmarshal(b, &g); err != nil {
			return nil, fmt.Errorf("parse %s: %w", f, err)
		}
		if g.ID == "" || g.Model == "" {
			return nil, fmt.Errorf("%s: id and model are required", f)
		}
		if g.Driver == "" {
			g.Driver = "fake"
		}
		out = append(out, g)
	}
	return out, nil
}

// groupName is a device group's name: the model, made safe for Nomad's
// "vendor/type/name" device ids.
func groupName(model string) string {
	return strings.NewReplacer("/", "-", " ", "-").Replace(model)
}
