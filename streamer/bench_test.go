package streamer

import (
	"context"
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/metal-stream/metal/internal/benchout"
	"github.com/metal-stream/metal/internal/browsertest"
	"github.com/metal-stream/metal/internal/token"
)

// frameCodeHarness reads the demo's stamp (stamp.go) from every decoded
// frame in requestVideoFrameCallback and records when the frame is
// displayed; a stamp whose check fails is counted in window.misreads.
const frameCodeHarness = `(() => {
  window.g2g = []; window.misreads = 0;
  const v = document.getElementById("video");
  const c = document.createElement("canvas"); c.width = 256; c.height = 16;
  const ctx = c.getContext("2d", { willReadFrequently: true });
  function onFrame(now, meta) {
    ctx.drawImage(v, 0, 0, 256, 16, 0, 0, 256, 16);
    const d = ctx.getImageData(0, 0, 256, 16).data;
    let code = 0;
    for (let i = 0; i < 16; i++) code = (code << 1) | (d[(8 * 256 + i * 16 + 8) * 4] > 128 ? 1 : 0);
    const n = code >> 4, check = ~(n ^ (n >> 4) ^ (n >> 8)) & 0xf;
    // expectedDisplayTime: the vsync the frame is shown at; presentationTime:
    // when it was handed to the compositor, decoded (no vsync phase).
    if ((code & 0xf) === check) window.g2g.push([n, performance.timeOrigin + (meta.expectedDisplayTime || now), performance.timeOrigin + (meta.presentationTime || now)]);
    else window.misreads++;
    v.requestVideoFrameCallback(onFrame);
  }
  v.requestVideoFrameCallback(onFrame);
  return 0;
})()`

// g2gRun is one run of one configuration.
type g2gRun struct {
	g2g                     []float64 // ms to displayed, one per matched stamp
	decoded                 []float64 // ms to decoded (handed to the compositor)
	stampsPerSec            float64   // stamps the demo drew per second (want stampsPerFrame × fps)
	p50, p95                float64
	misreads, unmatched     int
	fpsEncoded, fpsChrome   float64 // frames encoded, and decoded by Chromium, per second
	enc                     []float64
	cpu                     float64
	navToFrame, postToFrame float64 // ms
}

// BenchmarkStreamer measures, per resolution and frame rate with the
// software encoder, with playout-delay 0 and without: glass-to-glass (a
// stamp drawn on the X display four times per frame period, read back from
// each decoded frame in Chromium, see stamp.go), capture-to-encoded, the
// frame rates achieved (encoded, and decoded by Chromium), streamer CPU,
// and time to the first decoded frame from page navigation and from the
// WHEP POST. Each configuration runs METAL_BENCH_RUNS times (5), the two
// playout-delay settings alternating which goes first; it reports the
// median run (by glass-to-glass p50) and the range of the runs' p50s. It
// prints figures and asserts nothing about time.
func BenchmarkStreamer(b *testing.B) {
	window := 4 * time.Second
	if v, err := time.ParseDuration(os.Getenv("METAL_BENCH_WINDOW")); err == nil {
		window = v
	}
	runs := 5
	if n, err := strconv.Atoi(os.Getenv("METAL_BENCH_RUNS")); err == nil && n > 0 {
		runs = n
	}
	configs := []struct {
		name      string
		w, h, fps int
	}{{"720p30", 1280, 720, 30}, {"720p60", 1280, 720, 60}, {"1080p30", 1920, 1080, 30}, {"1080p60", 1920, 1080, 60}}
	browser := browsertest.New(b)
	for _, c := range configs {
		b.Run(c.name, func(b *testing.B) {
			for range b.N {
				results := map[bool][]g2gRun{}
				for i := range runs {
					order := []bool{true, false}
					if i%2 == 1 {
						order = []bool{false, true}
					}
					for _, pd0 := range order {
						results[pd0] = append(results[pd0], benchOnce(b, browser, c.w, c.h, c.fps, pd0, window))
					}
				}
				for _, pd0 := range []bool{true, false} {
					name := c.name + "-pd0"
					if !pd0 {
						name = c.name + "-pd-default"
					}
					reportRuns(b, name, results[pd0])
				}
			}
		})
	}
}

// reportRuns prints and records the median run of a configuration and the
// range of its runs.
func reportRuns(b *testing.B, name string, runs []g2gRun) {
	slices.SortFunc(runs, func(a, b g2gRun) int { return cmpFloat(a.p50, b.p50) })
	m := runs[len(runs)/2]
	p50s := make([]float64, len(runs))
	for i, r := range runs {
		p50s[i] = r.p50
	}
	benchout.Record("g2g/"+name, "ms", m.g2g)
	benchout.Record("g2g-runs/"+name, "ms", p50s)
	benchout.Record("encode/"+name, "ms", m.enc)
	benchout.Record("cpu/"+name, "%", []float64{m.cpu})
	benchout.Record("fps-encoded/"+name, "fps", []float64{m.fpsEncoded})
	benchout.Record("fps-decoded/"+name, "fps", []float64{m.fpsChrome})
	var misreads, unmatched, stampRates []float64
	for _, r := range runs {
		misreads, unmatched, stampRates = append(misreads, float64(r.misreads)), append(unmatched, float64(r.unmatched)), append(stampRates, r.stampsPerSec)
	}
	benchout.Record("misreads/"+name, "stamps", misreads)   // every run
	benchout.Record("unmatched/"+name, "stamps", unmatched) // every run
	benchout.Record("stamp-rate/"+name, "1/s", stampRates)  // every run
	benchout.Record("g2g-decoded/"+name, "ms", m.decoded)
	benchout.Record("nav-to-frame/"+name, "ms", []float64{m.navToFrame})
	benchout.Record("post-to-frame/"+name, "ms", []float64{m.postToFrame})
	fmt.Printf("%s: glass-to-glass p50 %.1f ms (runs %.1f-%.1f), p95 %.1f ms, to decoded p50 %.1f ms, %d samples, %d misreads, %d unmatched, %.0f stamps/s; "+
		"%.1f fps encoded, %.1f decoded by Chromium; capture-to-encoded p50 %.1f ms; CPU %.0f%%; first frame %.0f ms after navigation, %.0f ms after the WHEP POST\n",
		name, m.p50, runs[0].p50, runs[len(runs)-1].p50, m.p95, benchout.Percentile(m.decoded, 50), len(m.g2g), m.misreads, m.unmatched, m.stampsPerSec,
		m.fpsEncoded, m.fpsChrome, benchout.Percentile(m.enc, 50), m.cpu, m.navToFrame, m.postToFrame)
	b.ReportMetric(m.p50, name+"-g2g-p50-ms")
	b.ReportMetric(m.fpsChrome, name+"-fps-decoded")
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func benchOnce(b *testing.B, browser context.Context, w, h, fps int, pd0 bool, window time.Duration) g2gRun {
	var mu sync.Mutex
	var enc []float64
	r := startStreamer(b, func(cfg *Config) {
		cfg.Width, cfg.Height, cfg.FPS, cfg.Audio, cfg.PlayoutDelayZero = w, h, fps, false, pd0
		if e := os.Getenv("METAL_BENCH_ENCODER"); e != "" {
			cfg.Encoder = e // tools/gpu-check.sh: nvenc
		}
	}, func(s *Server) {
		s.OnEncoded = func(d time.Duration) {
			mu.Lock()
			enc = append(enc, float64(d.Microseconds())/1000)
			mu.Unlock()
		}
	})
	tab := browsertest.Tab(b, browser)
	if err := chromedp.Do(tab, chromedp.Navigate(r.playerURL(b, token.RoleOwner))); err != nil {
		b.Fatal(err)
	}
	if err := browsertest.WaitTrue(tab, `metal.state.firstFrameAt > 0`, 30*time.Second); err != nil {
		b.Fatal(err)
	}
	var res g2gRun
	first, err := browsertest.Eval[[]float64](tab, `[metal.state.firstFrameAt, metal.state.firstFrameAt - metal.state.postSentAt]`)
	if err != nil {
		b.Fatal(err)
	}
	res.navToFrame, res.postToFrame = first[0], first[1]
	if _, err := browsertest.Eval[int](tab, frameCodeHarness); err != nil {
		b.Fatal(err)
	}

	// Measure over the window, after a second of warm-up.
	time.Sleep(time.Second)
	_, _ = browsertest.Eval[any](tab, `window.g2g = [], window.misreads = 0, 0`)
	mu.Lock()
	enc = enc[:0]
	mu.Unlock()
	const decodedJS = `metal.state.pc.getStats().then(r => { let n = 0; r.forEach(s => { if (s.type === "inbound-rtp" && s.kind === "video") n = s.framesDecoded; }); return n; })`
	decoded0, _ := browsertest.Eval[float64](tab, decodedJS)
	cpu0, t0, frames0, stamps0 := benchout.ProcessCPU(0), time.Now(), r.media.Frames(), r.stamps.Load()
	time.Sleep(window)
	elapsed := time.Since(t0).Seconds()
	res.cpu = (benchout.ProcessCPU(0) - cpu0).Seconds() / elapsed * 100
	res.fpsEncoded = float64(r.media.Frames()-frames0) / elapsed
	decoded1, _ := browsertest.Eval[float64](tab, decodedJS)
	res.fpsChrome = (decoded1 - decoded0) / elapsed
	res.stampsPerSec = float64(r.stamps.Load()-stamps0) / elapsed
	samples, err := browsertest.Eval[[][3]float64](tab, `window.g2g`)
	if err != nil {
		b.Fatal(err)
	}
	res.misreads, _ = browsertest.Eval[int](tab, `window.misreads`)
	for _, s := range samples {
		drawn := r.StampDrawnAt(uint16(s[0]))
		at := float64(drawn.UnixMicro()) / 1000
		ms := s[1] - at
		if drawn.IsZero() || ms <= 0 || ms >= 1000 {
			res.unmatched++ // a stamp not drawn in this run's last second: counted, not measured
			continue
		}
		res.g2g = append(res.g2g, ms)
		res.decoded = append(res.decoded, s[2]-at)
	}
	// A run that read back (almost) no stamps measures nothing: it fails
	// rather than sorting first as a 0 ms run. (The read-back harness is
	// slower than the stream at 1080p60 on 2 cores: about 14 a second.)
	if min := 20; len(res.g2g) < min {
		b.Fatalf("%dx%d@%d: %d stamps read back in %s (%d misreads, %d unmatched), want at least %d", w, h, fps, len(res.g2g), window, res.misreads, res.unmatched, min)
	}
	mu.Lock()
	res.enc = slices.Clone(enc)
	mu.Unlock()
	res.p50, res.p95 = benchout.Percentile(res.g2g, 50), benchout.Percentile(res.g2g, 95)
	// This run's tab and streamer end here, not with the benchmark: the
	// next run has the machine to itself.
	_ = chromedp.Cancel(tab)
	r.cancel()
	select {
	case err := <-r.done:
		r.done <- err // for startStreamer's cleanup
	case <-time.After(30 * time.Second):
		b.Fatal("streamer did not stop within 30s")
	}
	return res
}

// BenchmarkStreamsPerBox starts more and more 720p30 streamers (each its own
// Xvfb, demo scene and x264 pipeline) with a receiving viewer on each (a Go
// WHEP peer that counts the frames it receives), until one viewer gets
// fewer than 29 frames a second, and reports how many held. The figure
// includes packetising and sending, not encoding alone; the viewers run on
// the same cores (without decoding).
func BenchmarkStreamsPerBox(b *testing.B) {
	// No cap: streams are added until one viewer falls below 29 fps
	// (METAL_BENCH_MAX_STREAMS bounds it for a quick look).
	held, maxN := 0, math.MaxInt
	if v, err := strconv.Atoi(os.Getenv("METAL_BENCH_MAX_STREAMS")); err == nil && v > 0 {
		maxN = v
	}
	var streams []*running
	var viewers []*viewer
	var fpsAll []float64
	for n := 1; n <= maxN; n++ {
		s := startStreamer(b, func(c *Config) { c.Audio = false; c.Width, c.Height, c.FPS = 1280, 720, 30 })
		streams = append(streams, s)
		viewers = append(viewers, dialViewer(b, s.Server))
		time.Sleep(2 * time.Second) // warm up
		before := make([]uint64, len(viewers))
		for i, v := range viewers {
			before[i] = v.Frames()
		}
		// CPU: this process (streamers, their GStreamer and X clients, the
		// viewers) and every stream's Xvfb.
		allCPU := func() time.Duration {
			d := benchout.ProcessCPU(0)
			for _, s := range streams {
				if pid := s.xvfbPID.Load(); pid > 0 {
					d += benchout.ProcessCPU(int(pid))
				}
			}
			return d
		}
		cpu0, t0 := allCPU(), time.Now()
		time.Sleep(5 * time.Second)
		elapsed := time.Since(t0).Seconds()
		minFPS := 1e9
		for i, v := range viewers {
			minFPS = min(minFPS, float64(v.Frames()-before[i])/elapsed)
		}
		cpu := (allCPU() - cpu0).Seconds() / elapsed * 100
		fpsAll = append(fpsAll, minFPS)
		b.Logf("%d streams with a viewer each: slowest viewer %.1f whole frames/s, streamers, Xvfb and viewers CPU %.0f%% (%.0f%% per stream)", n, minFPS, cpu, cpu/float64(n))
		benchout.Record(fmt.Sprintf("streams-per-box/%d", n), "fps", []float64{minFPS})
		benchout.Record(fmt.Sprintf("streams-per-box-cpu/%d", n), "%", []float64{cpu / float64(n)})
		if minFPS < 29 {
			break
		}
		held = n
	}
	b.ReportMetric(float64(held), "streams@29fps")
	b.ReportMetric(fpsAll[0], "1-stream-fps")
}
