package main

import (
	"fmt"
	"strings"
)

// Encoder slots: each GPU with NVENC is offered to Nomad as N device
// instances ("<uuid>/slot-<k>"), one per concurrent stream, so that Nomad
// schedules several sessions on one GPU and never more than N.
//
// What limits N differs by card:
//   - Consumer GeForce drivers cap concurrent NVENC sessions per system
//     (3, then 5 from driver 530, 8 from driver 550): the default is 3, the
//     lowest cap a supported driver enforces; raise it with the plugin
//     config where the driver allows more.
//   - Datacenter and professional cards (T4, A10, A16, L4, L40S, RTX A-series)
//     have no session cap; their limit is encoder throughput, about 1080p30
//     low-latency streams per NVENC engine of the figures below.
//
// Framebuffer memory bounds N too: each session's capture surfaces, encoder
// and CUDA context take about slot_memory_mib, and N is lowered until
// N × slot_memory_mib fits in the GPU's memory.

// modelFacts are what a GPU model can do, not what it is doing.
type modelFacts struct {
	engines int // NVENC engines; 0 = no video encoder (A100, H100, H200, A30)
	slots   int // default concurrent sessions
}

// knownModels maps a model, as a whole word or words within NVML's name
// ("Tesla T4", "NVIDIA L40S", "NVIDIA GeForce RTX 4090"), to its facts. The
// first match wins, so more specific names come first; whole words keep
// "A100" from matching "RTX A1000" and "L4" from matching "L40". A final
// "*" matches the start of a word ("MX*" matches "MX450").
var knownModels = []struct {
	match string
	facts modelFacts
}{
	{"H200", modelFacts{0, 0}},
	{"H100", modelFacts{0, 0}},
	{"A100", modelFacts{0, 0}},
	{"A30", modelFacts{0, 0}},
	{"GeForce GT", modelFacts{0, 0}},  // GT 1030 and kin: no NVENC
	{"GeForce MX*", modelFacts{0, 0}}, // laptop MX parts (MX450, ...): no NVENC
	{"L40S", modelFacts{3, 12}},
	{"L40", modelFacts{3, 12}},
	{"L4", modelFacts{2, 8}},
	{"A16", modelFacts{1, 8}}, // per GPU; the board has four
	{"A10", modelFacts{1, 6}},
	{"T4", modelFacts{1, 6}},
	{"RTX A6000", modelFacts{1, 8}},
	{"RTX A5000", modelFacts{1, 8}},
	{"RTX A4000", modelFacts{1, 6}},
	{"GeForce", modelFacts{1, 3}},
}

// defaultSlots is N for a GPU with NVENC whose model the table lacks.
const defaultSlots = 2

// defaultSlotMemoryMiB is the framebuffer one session needs.
const defaultSlotMemoryMiB = 512

// factsFor returns the table's facts for model, and whether it knew it.
func factsFor(model string) (modelFacts, bool) {
	words := " " + strings.Join(strings.Fields(model), " ") + " "
	for _, m := range knownModels {
		if prefix, ok := strings.CutSuffix(m.match, "*"); ok {
			if strings.Contains(words, " "+prefix) {
				return m.facts, true
			}
			continue
		}
		if strings.Contains(words, " "+m.match+" ") || strings.Contains(words, " "+m.match+"-") {
			return m.facts, true
		}
	}
	return modelFacts{}, false
}

// slotsFor is how many sessions a GPU takes: the plugin config's figure for
// its model (exact name, or "default"), else the table's, else
// defaultSlots; then lowered until the framebuffer holds them all. It also
// says why, when memory lowered it.
func slotsFor(g GPU, configured map[string]int, slotMiB int64) (int, string) {
	n, ok := configured[g.Model]
	if !ok {
		n, ok = configured[groupName(g.Model)]
	}
	if !ok {
		if f, known := factsFor(g.Model); known && f.slots > 0 {
			n = f.slots
		} else if d, set := configured["default"]; set {
			n = d
		} else {
			n = defaultSlots
		}
	}
	if n < 1 {
		n = 1
	}
	if slotMiB > 0 && g.MemoryMiB > 0 && int64(n)*slotMiB > g.MemoryMiB {
		fit := int(g.MemoryMiB / slotMiB)
		if fit < 1 {
			fit = 1 // one session always gets the card it was given
		}
		return fit, fmt.Sprintf("%d slots × %d MiB exceed %d MiB of memory; using %d", n, slotMiB, g.MemoryMiB, fit)
	}
	return n, ""
}

// slotID names slot k of the GPU with uuid.
func slotID(uuid string, k int) string { return fmt.Sprintf("%s/slot-%d", uuid, k) }

// gpuOfSlot is the UUID of the GPU a slot id belongs to.
func gpuOfSlot(id string) string {
	if i := strings.LastIndex(id, "/slot-"); i > 0 {
		return id[:i]
	}
	return id
}
