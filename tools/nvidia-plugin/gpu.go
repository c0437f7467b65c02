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
	ID        string `json:"id"`    // UUID, what NVIDIA_VISIBLE_DEVICES takes
	Index     int    `json:"index"` // NVML (PCI bus order) index on this machine
	Model     string `json:"model"`
	MemoryMiB int64  `json:"memory_mib"`
	Driver    string `json:"driver_version"`
	NVENCH264 bool   `json:"nvenc_h264"`
	NVENCHEVC bool   `json:"nvenc_hevc"`
	NVENCAV1  bool   `json:"nvenc_av1"`
	// Engines is the number of NVENC engines (0 when unknown or none).
	Engines  int    `json:"encoder_engines,omitempty"`
	PCIBusID string `json:"pci_bus_id,omitempty"`
	// Healthy is nil or true for a usable GPU; false with HealthDesc saying
	// why (an XID error, the GPU gone from the bus, a fake file's flag).
	Healthy    *bool  `json:"healthy,omitempty"`
	HealthDesc string `json:"health_desc,omitempty"`
	// Load, for stats only, never for fingerprints: the encoder's current
	// utilisation in percent, its sessions, and NVML's remaining encoder
	// capacity (0-100) for H.264.
	EncoderUtilization int64 `json:"encoder_utilization,omitempty"`
	EncoderSessions    int64 `json:"encoder_sessions,omitempty"`
	EncoderCapacity    int64 `json:"encoder_capacity,omitempty"`
}

func (g GPU) healthy() bool { return g.Healthy == nil || *g.Healthy }

// Source lists GPUs: NVML on a real machine, a directory on a fake one.
type Source interface {
	GPUs() ([]GPU, error)
}

// ErrNoDriver means there is no NVIDIA driver: the plugin reports no devices.
var ErrNoDriver = errors.New("no NVIDIA driver")

// dirSource reads one JSON file per GPU from a directory:
//
//	{"id": "GPU-a", "model": "RTX A4000", "memory_mib": 16376, "nvenc_h264": true}
//
// Files are read in name order; that order is the GPUs' index unless a
// file gives one. "healthy": false marks a GPU unhealthy.
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
	for i, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", f, err)
		}
		g := GPU{Index: i}
		if err := json.Unmarshal(b, &g); err != nil {
			return nil, fmt.Errorf("parse %s: %w", f, err)
		}
		if g.ID == "" || g.Model == "" {
			return nil, fmt.Errorf("%s: id and model are required", f)
		}
		if strings.Contains(g.ID, "/") {
			return nil, fmt.Errorf("%s: id %q must not contain /", f, g.ID)
		}
		if g.Driver == "" {
			g.Driver = "fake"
		}
		if !g.healthy() && g.HealthDesc == "" {
			g.HealthDesc = "marked unhealthy"
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
