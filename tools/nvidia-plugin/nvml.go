package main

import (
	"fmt"
	"sync"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// nvmlSource reads GPUs through NVML (libnvidia-ml, loaded at run time).
type nvmlSource struct {
	once    sync.Once
	initErr error
}

func (n *nvmlSource) init() error {
	n.once.Do(func() {
		if ret := nvml.Init(); ret != nvml.SUCCESS {
			n.initErr = fmt.Errorf("%w: %s", ErrNoDriver, nvml.ErrorString(ret))
		}
	})
	return n.initErr
}

func (n *nvmlSource) GPUs() ([]GPU, error) {
	if err := n.init(); err != nil {
		return nil, err
	}
	driver, _ := nvml.SystemGetDriverVersion()
	count, ret := nvml.DeviceGetCount()
	if ret != nvml.SUCCESS {
		return nil, fmt.Errorf("nvml device count: %s", nvml.ErrorString(ret))
	}
	var out []GPU
	for i := 0; i < count; i++ {
		dev, ret := nvml.DeviceGetHandleByIndex(i)
		if ret != nvml.SUCCESS {
			continue
		}
		g := GPU{Driver: driver}
		g.ID, _ = dev.GetUUID()
		g.Model, _ = dev.GetName()
		if mem, ret := dev.GetMemoryInfo(); ret == nvml.SUCCESS {
			g.MemoryMiB = int64(mem.Total / (1 << 20))
		}
		if pci, ret := dev.GetPciInfo(); ret == nvml.SUCCESS {
			g.PCIBusID = fmt.Sprintf("%08x:%02x:%02x.0", pci.Domain, pci.Bus, pci.Device)
		}
		// A GPU without NVENC (H100, H200, A100) answers NOT_SUPPORTED or a
		// capacity of 0 for every codec.
		capacity := func(t nvml.EncoderType) int64 {
			c, ret := dev.GetEncoderCapacity(t)
			if ret != nvml.SUCCESS {
				return 0
			}
			return int64(c)
		}
		g.EncoderCapacity = capacity(nvml.ENCODER_QUERY_H264)
		g.NVENCH264 = g.EncoderCapacity > 0
		g.NVENCHEVC = capacity(nvml.ENCODER_QUERY_HEVC) > 0
		g.NVENCAV1 = capacity(nvml.ENCODER_QUERY_AV1) > 0
		if u, _, ret := dev.GetEncoderUtilization(); ret == nvml.SUCCESS {
			g.EncoderUtilization = int64(u)
		}
		if sessions, _, _, ret := dev.GetEncoderStats(); ret == nvml.SUCCESS {
			g.EncoderSessions = int64(sessions)
		}
		out = append(out, g)
	}
	return out, nil
}
