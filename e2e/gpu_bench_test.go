package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/metal-stream/metal/internal/benchout"
	"github.com/metal-stream/metal/internal/localcluster"
	"github.com/metal-stream/metal/jobs"
)

// BenchmarkGPUPlacement measures placement latency with 8 sessions in
// flight against the real Nomad and the device constraint: 2 fake NVENC
// GPUs × 4 encoder slots, jobs/streamer.nomad.hcl with gpu = true
// registered 8 at once (each task a process that sleeps, so only Nomad is
// measured), from registration to the allocation holding its slot. 25
// rounds (200 placements) repeat after a purge; it reports p50 and p99 over
// every placement, and placements per second: each round's 8 over the time
// from its first registration to its last allocation, median over rounds.
func BenchmarkGPUPlacement(b *testing.B) {
	c, _ := gpuCluster(b, map[string]string{"a1": fmt.Sprintf(a4000, "a1"), "a2": fmt.Sprintf(a4000, "a2")}, 4)
	ctx := context.Background()
	sleeper := filepath.Join(b.TempDir(), "sleep.sh")
	if err := os.WriteFile(sleeper, []byte("#!/bin/sh\nexec sleep 300\n"), 0o755); err != nil {
		b.Fatal(err)
	}
	hcl, err := jobs.Read("streamer.nomad.hcl")
	if err != nil {
		b.Fatal(err)
	}
	base, err := localcluster.ParseJob(ctx, c.Nomad, hcl, map[string]any{
		"session_id": "bench", "driver": "raw_exec", "metal_binary": sleeper, "gpu": true, "cpu": 20, "memory": 32,
	})
	if err != nil {
		b.Fatal(err)
	}
	place := func(id string) (time.Duration, error) { return placeJob(c.Nomad, base, id) }
	rounds := max(b.N, 25)
	var lat, perSec []float64
	for r := range rounds {
		t0 := time.Now()
		var wg sync.WaitGroup
		var mu sync.Mutex
		for i := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				d, err := place(fmt.Sprintf("metal-session-bench-%d-%d", r, i))
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					b.Error(err)
					return
				}
				lat = append(lat, float64(d.Microseconds())/1000)
			}()
		}
		wg.Wait()
		if b.Failed() {
			return
		}
		perSec = append(perSec, 8/time.Since(t0).Seconds())
		if err := localcluster.PurgeJobs(ctx, c.Nomad); err != nil {
			b.Fatal(err)
		}
		waitNoLiveAllocs(b, c)
	}
	benchout.Record("gpu-placement-latency-8-in-flight", "ms", lat)
	benchout.Record("gpu-placements-per-second", "1/s", perSec)
	b.ReportMetric(benchout.Percentile(perSec, 50), "gpu-placements/s")
	b.ReportMetric(benchout.Percentile(lat, 50), "gpu-place-p50-ms")
	b.ReportMetric(benchout.Percentile(lat, 99), "gpu-place-p99-ms")
}

// waitNoLiveAllocs waits until no allocation still holds resources.
func waitNoLiveAllocs(t testing.TB, c *localcluster.Cluster) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		allocs, _, err := c.Nomad.Allocations().List(nil)
		live := 0
		for _, a := range allocs {
			if a.DesiredStatus == "run" && (a.ClientStatus == "pending" || a.ClientStatus == "running") {
				live++
			}
		}
		if err == nil && live == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d allocations still live after a purge (%v)", live, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
