package e2e

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/metal-stream/metal/internal/benchout"
)

// BenchmarkLeaderFailover kills the leading gateway (SIGKILL: no lock
// released) 10 times, and times each from the kill to the new leader's
// first placement: a player admitted at a follower right after the kill,
// with a free slot, leaves the queue. It reports p50 and p95.
func BenchmarkLeaderFailover(b *testing.B) {
	gws := startGateways(b, 3, 1, 10, "-open", "-streamer-cpu", "100")
	var took []float64
	for i := range 10 {
		lead := leaderOf(b, gws, 15*time.Second)
		follower := gws[(lead+1)%3]
		at := time.Now()
		gws[lead].kill(b)
		code, body, err := follower.do("POST", "/v1/sessions", "", map[string]string{"guest": fmt.Sprintf("failover-%02d", i)})
		id := jsonField(body, "id")
		if err != nil || id == "" {
			b.Fatalf("admit at a follower: %d %s %v", code, body, err)
		}
		for st := stateAt(follower, id); st == "queued" || st == ""; st = stateAt(follower, id) {
			if time.Since(at) > 30*time.Second {
				b.Fatalf("kill %d: not placed within 30 s", i)
			}
			time.Sleep(5 * time.Millisecond)
		}
		took = append(took, float64(time.Since(at).Milliseconds()))
		if code, b2 := follower.api(b, "DELETE", "/v1/sessions/"+id, "", nil); code != 204 {
			b.Fatalf("leave: %d %s", code, b2)
		}
		gws[lead].start(b)
	}
	benchout.Record("leader-failover", "ms", took)
	b.ReportMetric(benchout.Percentile(took, 50), "failover-p50-ms")
	b.ReportMetric(benchout.Percentile(took, 95), "failover-p95-ms")
}

// BenchmarkAdmissions measures session admissions per second (2xx answers
// only) with one gateway and with three, the load spread over them: every
// admission is a Consul transaction (record and player claim).
func BenchmarkAdmissions(b *testing.B) {
	for _, n := range []int{1, 3} {
		b.Run(fmt.Sprintf("gateways=%d", n), func(b *testing.B) {
			gws := startGateways(b, n, 1, 100000, "-open", "-streamer-cpu", "1000000")
			leaderOf(b, gws, 15*time.Second)
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
			var ok, other atomic.Int64
			var next atomic.Int64
			deadline := time.Now().Add(3 * time.Second)
			var wg sync.WaitGroup
			for w := range 12 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					g := gws[w%n]
					for time.Now().Before(deadline) {
						code, _, err := postJSON(client, g.url+"/v1/sessions", fmt.Sprintf(`{"guest":"admit-%08d"}`, next.Add(1)))
						switch {
						case err == nil && code >= 200 && code < 300:
							ok.Add(1)
						default:
							other.Add(1)
						}
					}
				}()
			}
			wg.Wait()
			rate := float64(ok.Load()) / 3
			benchout.Record(fmt.Sprintf("admissions-%d-gateways", n), "req/s", []float64{rate})
			b.ReportMetric(rate, "admissions/s")
			b.ReportMetric(float64(other.Load()), "non-2xx")
		})
	}
}

func postJSON(c *http.Client, url, body string) (int, []byte, error) {
	resp, err := c.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// stateAt reads a session's state at g as its player; "" on any error.
func stateAt(g *gatewayProc, id string) string {
	_, b, err := g.do("GET", "/v1/sessions/"+id, "", nil)
	if err != nil {
		return ""
	}
	return jsonField(b, "state")
}
