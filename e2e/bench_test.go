package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	nomad "github.com/hashicorp/nomad/api"

	"github.com/metal-stream/metal/internal/benchout"
	"github.com/metal-stream/metal/internal/browsertest"
	"github.com/metal-stream/metal/internal/localcluster"
	"github.com/metal-stream/metal/internal/localcluster/clustertest"
)

// firstFrameHarness records when the first frame is decoded, through
// requestVideoFrameCallback, once the player has created its video element.
const firstFrameHarness = `(() => {
  const hook = () => {
    const v = document.getElementById("video");
    if (!v) return setTimeout(hook, 5);
    v.requestVideoFrameCallback(() => { window.firstFrameAt = performance.now(); });
  };
  hook();
  return 0;
})()`

// openToFirstFrame opens link in tab and returns the milliseconds from
// navigation start (performance.now()'s origin) to the first decoded frame.
func openToFirstFrame(b *testing.B, tab context.Context, link string) float64 {
	b.Helper()
	if err := chromedp.Do(tab, chromedp.Navigate(link)); err != nil {
		b.Fatal(err)
	}
	if _, err := browsertest.Eval[int](tab, firstFrameHarness); err != nil {
		b.Fatal(err)
	}
	if err := browsertest.WaitTrue(tab, `window.firstFrameAt > 0`, 90*time.Second); err != nil {
		b.Fatal(err)
	}
	v, _ := browsertest.Eval[float64](tab, `window.firstFrameAt`)
	return v
}

// BenchmarkPlayerURLToFirstFrame measures the time from opening a player
// URL to the first decoded frame, cold and warm. Cold: admission, Nomad
// placement, the streamer starting (Xvfb, GStreamer, PulseAudio), Consul
// health, WHEP and ICE; each iteration is a new player and a new streamer.
// Warm: the same player opens the URL again while the session runs (a
// reload), so the session is resumed, not placed: the gateway's answer,
// WHEP and ICE.
func BenchmarkPlayerURLToFirstFrame(b *testing.B) {
	g := startGateway(b, 1, 1)
	browser := browsertest.New(b)
	var ms, warm []float64
	for i := range max(b.N, 3) {
		link := g.playerLink(b, fmt.Sprintf("bench-%d", i))
		tab := browsertest.Tab(b, browser)
		ms = append(ms, openToFirstFrame(b, tab, link))
		warm = append(warm, openToFirstFrame(b, tab, link)) // the same player again: resumed
		id := sessionOf(b, tab)                             // as its player: the tab's owner cookie
		_ = chromedp.Do(tab, chromedp.Navigate("about:blank"))
		if code, body := g.api(b, "DELETE", "/v1/sessions/"+id, "", nil); code != 204 {
			b.Fatalf("leave: %d %s", code, body)
		}
		waitNoJobs(b)
	}
	benchout.Record("url-to-first-frame", "ms", ms)
	benchout.Record("url-to-first-frame-warm", "ms", warm)
	b.ReportMetric(benchout.Percentile(warm, 50), "url-to-frame-warm-p50-ms")
	b.ReportMetric(benchout.Percentile(ms, 50), "url-to-frame-p50-ms")
	b.ReportMetric(benchout.Percentile(ms, 95), "url-to-frame-p95-ms")
}

// BenchmarkPlacement registers batch jobs against the real Nomad agent and
// measures placement latency (register to allocation created) one at a time,
// and placements per second with 16 registrations in flight.
func BenchmarkPlacement(b *testing.B) {
	c := clustertest.Cluster(b)
	ctx := context.Background()
	hcl := `job "bench" {
  type = "batch"
  group "g" {
    task "t" {
      driver = "raw_exec"
      config {
        command = "/bin/true"
      }
      resources {
        cpu    = 10
        memory = 10
      }
    }
  }
}`
	base, err := localcluster.ParseJob(ctx, c.Nomad, hcl, nil)
	if err != nil {
		b.Fatal(err)
	}
	place := func(id string) (time.Duration, error) { return placeJob(c.Nomad, base, id) }
	n := max(b.N, 50)
	var lat []float64
	for i := range n {
		d, err := place(fmt.Sprintf("bench-seq-%d", i))
		if err != nil {
			b.Fatal(err)
		}
		lat = append(lat, float64(d.Microseconds())/1000)
	}
	var wg sync.WaitGroup
	var next atomic.Int64
	start := time.Now()
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1)
				if i > int64(n) {
					return
				}
				if _, err := place(fmt.Sprintf("bench-par-%d", i)); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	perSec := float64(n) / time.Since(start).Seconds()
	if err := localcluster.PurgeJobs(ctx, c.Nomad); err != nil {
		b.Fatal(err)
	}
	benchout.Record("placement-latency", "ms", lat)
	benchout.Record("placements-per-second", "1/s", []float64{perSec})
	b.ReportMetric(benchout.Percentile(lat, 50), "place-p50-ms")
	b.ReportMetric(benchout.Percentile(lat, 99), "place-p99-ms")
	b.ReportMetric(perSec, "placements/s")
}

// BenchmarkGatewayStatus measures session-status throughput of a real
// gateway process under a bounded load: 8 clients for 3 seconds.
func BenchmarkGatewayStatus(b *testing.B) {
	// No node has room for a streamer this big: the session stays queued
	// and the figure is the gateway alone, not a streamer beside it.
	g := startGatewayOn(b, clustertest.Cluster(b), "auto", 1, "-gpu=false", "-open", "-streamer-cpu", "1000000")
	_, body := g.api(b, "POST", "/v1/sessions", "", map[string]string{"guest": "bench-status-1"})
	id := jsonField(body, "id")
	if id == "" {
		b.Fatalf("no session: %s", body)
	}
	cs, _ := ownerCookies.Load(id)
	owner, _ := cs.([]*http.Cookie)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	// Only 2xx answers count; other statuses and transport errors are
	// counted and reported apart, over the time measured.
	var ok, other, failed atomic.Int64
	var mu sync.Mutex
	var lat []float64
	t0 := time.Now()
	deadline := t0.Add(3 * time.Second)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []float64
			for time.Now().Before(deadline) {
				start := time.Now()
				req, _ := http.NewRequest("GET", g.url+"/v1/sessions/"+id, nil)
				for _, c := range owner {
					req.AddCookie(c) // as the session's player: a stranger only gets 404s
				}
				resp, err := client.Do(req)
				if err != nil {
					failed.Add(1)
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode/100 != 2 {
					other.Add(1)
					continue
				}
				mine = append(mine, float64(time.Since(start).Microseconds())/1000)
				ok.Add(1)
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(t0).Seconds()
	benchout.Record("gateway-status-latency", "ms", lat)
	benchout.Record("gateway-status-throughput", "req/s", []float64{float64(ok.Load()) / elapsed})
	benchout.Record("gateway-status-not-2xx", "answers", []float64{float64(other.Load())})
	benchout.Record("gateway-status-errors", "requests", []float64{float64(failed.Load())})
	b.ReportMetric(float64(ok.Load())/elapsed, "status-2xx/s")
	b.ReportMetric(float64(other.Load()), "status-not-2xx")
	b.ReportMetric(float64(failed.Load()), "status-errors")
	b.ReportMetric(benchout.Percentile(lat, 99), "status-p99-ms")
}

func waitNoJobs(b testing.TB) {
	c := clustertest.Cluster(b)
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		if jobs, _, err := c.Nomad.Jobs().List(nil); err == nil && len(jobs) == 0 {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	b.Fatal("jobs left over")
}

func jsonField(b []byte, key string) string {
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	v, _ := m[key].(string)
	return v
}

// placeJob registers a copy of base as job id and times registration to
// the first allocation of its evaluation (30 s at most).
func placeJob(n *nomad.Client, base *nomad.Job, id string) (time.Duration, error) {
	job := *base
	job.ID, job.Name = &id, &id
	start := time.Now()
	resp, _, err := n.Jobs().Register(&job, nil)
	if err != nil {
		return 0, err
	}
	var index uint64
	for {
		allocs, meta, err := n.Evaluations().Allocations(resp.EvalID, &nomad.QueryOptions{WaitIndex: index, WaitTime: 10 * time.Second})
		if err != nil {
			return 0, err
		}
		if len(allocs) > 0 {
			return time.Since(start), nil
		}
		if time.Since(start) > 30*time.Second {
			return 0, fmt.Errorf("job %s not placed in 30 s", id)
		}
		index = meta.LastIndex
	}
}
