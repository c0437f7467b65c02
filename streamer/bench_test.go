package streamer

import (
	"context"
	"fmt"
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

// frameCodeHarness reads the demo's frame code from every decoded frame in
// requestVideoFrameCallback and records when the frame is displayed.
const frameCodeHarness = `(() => {
  window.g2g = [];
  const v = document.getElementById("video");
  const c = document.createElement("canvas"); c.width = 256; c.height = 16;
  const ctx = c.getContext("2d", { willReadFrequently: true });
  function onFrame(now, meta) {
    if (!window.firstFrameAt) window.firstFrameAt = performance.now();
    ctx.drawImage(v, 0, 0, 256, 16, 0, 0, 256, 16);
    const d = ctx.getImageData(0, 0, 256, 16).data;
    let code = 0;
    for (let i = 0; i < 16; i++) code = (code << 1) | (d[(8 * 256 + i * 16 + 8) * 4] > 128 ? 1 : 0);
    window.g2g.push([code, performance.timeOrigin + (meta.expectedDisplayTime || now)]);
    v.requestVideoFrameCallback(onFrame);
  }
  v.requestVideoFrameCallback(onFrame);
  return 0;
})()`

// BenchmarkStreamer measures, per resolution and frame rate with the
// software encoder: capture-to-encoded latency (p50, p95), streamer CPU,
// time from WHEP POST to the first decoded frame, and glass-to-glass latency
// (a frame code drawn on the X display, read back from the decoded video in
// Chromium). It prints figures and asserts nothing about time.
func BenchmarkStreamer(b *testing.B) {
	window := 6 * time.Second
	if v, err := time.ParseDuration(os.Getenv("METAL_BENCH_WINDOW")); err == nil {
		window = v
	}
	type benchCase struct {
		name             string
		w, h, fps        int
		playoutDelayZero bool
	}
	var cases []benchCase
	for _, r := range []struct {
		name string
		w, h int
	}{{"720p", 1280, 720}, {"1080p", 1920, 1080}} {
		for _, fps := range []int{30, 60} {
			for _, pd0 := range []bool{true, false} {
				pd := "pd0"
				if !pd0 {
					pd = "pd-default"
				}
				cases = append(cases, benchCase{fmt.Sprintf("%s%d-%s", r.name, fps, pd), r.w, r.h, fps, pd0})
			}
		}
	}
	browser := browsertest.New(b)
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			for range b.N {
				benchOnce(b, browser, c.name, c.w, c.h, c.fps, c.playoutDelayZero, window)
			}
		})
	}
}

func benchOnce(b *testing.B, browser context.Context, name string, w, h, fps int, pd0 bool, window time.Duration) {
	var mu sync.Mutex
	var enc []float64
	r := startStreamer(b, func(cfg *Config) {
		cfg.Width, cfg.Height, cfg.FPS, cfg.Audio, cfg.PlayoutDelayZero = w, h, fps, false, pd0
		if enc := os.Getenv("METAL_BENCH_ENCODER"); enc != "" {
			cfg.Encoder = enc // tools/gpu-check.sh: nvenc
		}
	}, func(s *Server) {
		s.OnEncoded = func(d time.Duration) {
			mu.Lock()
			enc = append(enc, float64(d.Microseconds())/1000)
			mu.Unlock()
		}
	})
	tab := browsertest.Tab(b, browser)
	url := r.URL() + "/#manual=1&token=" + r.token(b, "sess-test", token.RoleOwner)
	if err := chromedp.Do(tab, chromedp.Navigate(url)); err != nil {
		b.Fatal(err)
	}
	if _, err := browsertest.Eval[int](tab, frameCodeHarness); err != nil {
		b.Fatal(err)
	}
	if _, err := browsertest.Eval[any](tab, `metal.connect(), 0`); err != nil {
		b.Fatal(err)
	}
	if err := browsertest.WaitTrue(tab, `window.firstFrameAt > 0`, 30*time.Second); err != nil {
		b.Fatal(err)
	}
	firstFrame, _ := browsertest.Eval[float64](tab, `window.firstFrameAt - metal.state.connectStartedAt`)

	// Measure over the window, after a second of warm-up.
	time.Sleep(time.Second)
	_, _ = browsertest.Eval[any](tab, `window.g2g = [], 0`)
	mu.Lock()
	enc = enc[:0]
	mu.Unlock()
	const decodedJS = `metal.state.pc.getStats().then(r => { let n = 0; r.forEach(s => { if (s.type === "inbound-rtp" && s.kind === "video") n = s.framesDecoded; }); return n; })`
	decoded0, _ := browsertest.Eval[float64](tab, decodedJS)
	cpu0, t0, frames0 := benchout.ProcessCPU(0), time.Now(), r.media.Frames()
	time.Sleep(window)
	cpu := (benchout.ProcessCPU(0) - cpu0).Seconds() / time.Since(t0).Seconds() * 100
	fpsEncoded := float64(r.media.Frames()-frames0) / time.Since(t0).Seconds()
	decoded1, _ := browsertest.Eval[float64](tab, decodedJS)
	fpsChromium := (decoded1 - decoded0) / time.Since(t0).Seconds()
	samples, err := browsertest.Eval[[][2]float64](tab, `window.g2g`)
	if err != nil {
		b.Fatal(err)
	}
	var g2g []float64
	for _, s := range samples {
		drawn := r.FrameDrawnAt(uint32(s[0]))
		if drawn.IsZero() {
			continue
		}
		ms := s[1] - float64(drawn.UnixMicro())/1000
		if ms > 0 && ms < 1000 {
			g2g = append(g2g, ms)
		}
	}
	mu.Lock()
	encCopy := slices.Clone(enc)
	mu.Unlock()
	fpsDecoded := float64(len(samples)) / window.Seconds()

	benchout.Record("g2g/"+name, "ms", g2g)
	benchout.Record("encode/"+name, "ms", encCopy)
	benchout.Record("cpu/"+name, "%", []float64{cpu})
	benchout.Record("whep-to-frame/"+name, "ms", []float64{firstFrame})
	b.ReportMetric(benchout.Percentile(encCopy, 50), "enc-p50-ms")
	b.ReportMetric(benchout.Percentile(encCopy, 95), "enc-p95-ms")
	b.ReportMetric(benchout.Percentile(g2g, 50), "g2g-p50-ms")
	b.ReportMetric(benchout.Percentile(g2g, 95), "g2g-p95-ms")
	b.ReportMetric(firstFrame, "whep-to-frame-ms")
	b.ReportMetric(cpu, "cpu-%")
	b.ReportMetric(fpsDecoded, "fps-decoded")
	b.ReportMetric(fpsEncoded, "fps-encoded")
	b.ReportMetric(fpsChromium, "fps-chromium-decoded")
	b.ReportMetric(float64(len(g2g)), "g2g-samples")
	fmt.Printf("encoder %s (%s): %s glass-to-glass p50 %.1f ms p95 %.1f ms, capture-to-encoded p50 %.1f ms p95 %.1f ms, %.1f fps encoded, %.1f decoded by Chromium, %.1f read back\n",
		r.Encoder(), r.branch.Fmtp(), name, benchout.Percentile(g2g, 50), benchout.Percentile(g2g, 95),
		benchout.Percentile(encCopy, 50), benchout.Percentile(encCopy, 95), fpsEncoded, fpsChromium, fpsDecoded)
}

// BenchmarkStreamsPerBox starts more and more 720p30 streamers (each its own
// Xvfb, demo scene and x264 pipeline) with a receiving viewer on each (a Go
// WHEP peer that counts the frames it receives), until one viewer gets
// fewer than 29 frames a second, and reports how many held. The figure
// includes packetising and sending, not encoding alone; the viewers run on
// the same cores (without decoding).
func BenchmarkStreamsPerBox(b *testing.B) {
	held, maxN := 0, 8
	if v, err := strconv.Atoi(os.Getenv("METAL_BENCH_MAX_STREAMS")); err == nil {
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
		cpu0, t0 := benchout.ProcessCPU(0), time.Now()
		time.Sleep(5 * time.Second)
		elapsed := time.Since(t0).Seconds()
		minFPS := 1e9
		for i, v := range viewers {
			minFPS = min(minFPS, float64(v.Frames()-before[i])/elapsed)
		}
		cpu := (benchout.ProcessCPU(0) - cpu0).Seconds() / elapsed * 100
		fpsAll = append(fpsAll, minFPS)
		b.Logf("%d streams with a viewer each: slowest viewer %.1f fps, streamer and viewers CPU %.0f%% (%.0f%% per stream)", n, minFPS, cpu, cpu/float64(n))
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
