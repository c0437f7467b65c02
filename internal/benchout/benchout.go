// Package benchout lets benchmarks hand their raw samples to `make bench`'s
// report (medians, p95 and the latency plot): each call appends one JSON
// line to $METAL_BENCH_OUT/samples.jsonl. Without the variable it does
// nothing, so `go test -bench` alone still works.
package benchout

import (
	"encoding/json"
	"os"
	"path/filepath"
	"sync"
)

// Series is one named set of samples.
type Series struct {
	Name   string    `json:"name"`
	Unit   string    `json:"unit"`
	Values []float64 `json:"values"`
}

var mu sync.Mutex

// Record appends a series to the samples file.
func Record(name, unit string, values []float64) {
	dir := os.Getenv("METAL_BENCH_OUT")
	if dir == "" || len(values) == 0 {
		return
	}
	mu.Lock()
	defer mu.Unlock()
	f, err := os.OpenFile(filepath.Join(dir, "samples.jsonl"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return
	}
	defer f.Close()
	_ = json.NewEncoder(f).Encode(Series{Name: name, Unit: unit, Values: values})
}
