package streamer

import (
	"context"
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/metal-stream/metal/internal/benchout"
	"github.com/metal-stream/metal/internal/browsertest"
	"github.com/metal-stream/metal/internal/token"
)

// pinVideo pins the video to the window's top-left corner at its own size,
// so that the glass shows every cell of the stamp pixel for pixel.
const pinVideo = `(() => {
  const v = document.getElementById("video");
  v.style.cssText = "position: fixed; left: 0; top: 0; width: " + v.videoWidth + "px; height: " + v.videoHeight + "px; object-fit: none; z-index: 2147483647; margin: 0; border: 0;";
  return 0;
})()`

// frameCodeHarness reads the demo's stamp (stamp.go) from every decoded
// frame in requestVideoFrameCallback and records when the frame was decoded
// (presentationTime: handed to the compositor) on the page's clock; a stamp
// whose check fails is counted in window.misreads. It runs in a window of
// its own, after the glass's: reading frames back on the page's main thread
// slows what the screen shows.
const frameCodeHarness = `(() => {
  window.g2g = []; window.misreads = 0; window.g2gStop = false;
  const v = document.getElementById("video");
  const c = document.createElement("canvas"); c.width = 256; c.height = 16;
  const ctx = c.getContext("2d", { willReadFrequently: true });
  function onFrame(now, meta) {
    ctx.drawImage(v, 0, 0, 256, 16, 0, 0, 256, 16);
    const d = ctx.getImageData(0, 0, 256, 16).data;
    let code = 0;
    for (let i = 0; i < 16; i++) code = (code << 1) | (d[(8 * 256 + i * 16 + 8) * 4] > 128 ? 1 : 0);
    const n = code >> 4, check = ~(n ^ (n >> 4) ^ (n >> 8)) & 0xf;
    if ((code & 0xf) === check) window.g2g.push([n, performance.timeOrigin + (meta.presentationTime || now)]);
    else window.misreads++;
    if (!window.g2gStop) v.requestVideoFrameCallback(onFrame);
  }
  v.requestVideoFrameCallback(onFrame);
  return 0;
})()`

// g2gRun is one run of one configuration.
type g2gRun struct {
	g2g          []float64 // ms from drawn to shown on the glass, one per stamp shown
	decoded      []float64 // ms from drawn to decoded (handed to the compositor), page clock corrected
	stampsPerSec float64   // stamps the demo drew per second (want stampsPerFrame × fps)
	p50, p95     float64   // of g2g
	decodedP50   float64
	// misreads: decoded frames whose stamp check failed; glassMisreads:
	// changes on the glass whose check failed; the unmatched counts: stamps
	// read that were not drawn in this run's last second (on the glass, in
	// the page's read-back, of the page's own stamp).
	misreads, glassMisreads                         int
	glassUnmatched, decodedUnmatched, pageUnmatched int
	// decodedCoverage: the share of the frames Chromium decoded in the
	// decoded window that the page read back.
	decodedCoverage float64
	// pollRate: glass reads per second (1000 asked); pollGap: the longest
	// time between two reads, ms.
	pollRate, pollGap float64
	fpsEncoded        float64 // frames encoded per second
	fpsChrome         float64 // frames decoded by Chromium per second
	fpsShown          float64 // distinct stamps shown on the glass per second
	clockOffset       float64 // ms the page clock ran ahead of Go's
	clockErr          float64 // ms, the calibration's bound
	enc               []float64
	cpu               float64
	navToFrame        float64 // ms
	postToFrame       float64 // ms
	encoder           string  // the element that ran
	// pagePaint: ms from the page changing a stamp of its own (DOM) to
	// the screen showing it, after the video window: the browser's own
	// paint path, for comparison.
	pagePaint []float64
}

// pageStampTop is where the page's own stamp sits, in px below the video's.
const pageStampTop = 32

// pageStampHarness draws a stamp of the page's own (stamp.go's code, 16
// divs) over the video at pageStampTop (its one %d verb), a new one every 4 ms, recording
// when each was set on the page's clock (window.pageAt, by counter).
const pageStampHarness = `(() => {
  window.pageAt = new Array(4096).fill(0);
  const bar = document.createElement("div");
  bar.style.cssText = "position: fixed; left: 0; top: %dpx; width: 256px; height: 16px; z-index: 2147483647; display: flex;";
  const cells = [];
  for (let i = 0; i < 16; i++) { const c = document.createElement("div"); c.style.cssText = "width: 16px; height: 16px;"; bar.appendChild(c); cells.push(c); }
  document.body.appendChild(bar);
  let n = 0;
  window.pageTimer = setInterval(() => {
    n = (n + 1) %% 4096;
    const code = (n << 4) | (~(n ^ (n >> 4) ^ (n >> 8)) & 0xf);
    for (let i = 0; i < 16; i++) cells[i].style.background = ((code >> (15 - i)) & 1) ? "#fff" : "#000";
    window.pageAt[n] = performance.timeOrigin + performance.now();
  }, 4);
  return 0;
})()`

// BenchmarkStreamer measures, per resolution and frame rate with the
// software encoder, with playout-delay 0 and without: glass-to-glass (a
// stamp drawn on the streamer's X display four times per frame period, see
// stamp.go, read back from the screen of a second X display on which a
// Chromium with a window plays the stream; and, as a second figure, from
// each decoded frame in the page), capture-to-encoded, the frame rates
// achieved (encoded, decoded by Chromium, shown on the glass), streamer CPU,
// and time to the first decoded frame from page navigation and from the
// WHEP POST. Each configuration runs METAL_BENCH_RUNS times (5), the two
// playout-delay settings alternating which goes first; it reports the
// median run (by glass-to-glass p50), the range of the runs' p50s, and
// every run's figures. It prints figures and asserts nothing about time.
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
	if only := os.Getenv("METAL_BENCH_CONFIG"); only != "" {
		configs = slices.DeleteFunc(configs, func(c struct {
			name      string
			w, h, fps int
		}) bool {
			return c.name != only
		})
	}
	for _, c := range configs {
		b.Run(c.name, func(b *testing.B) {
			g := startGlass(b, c.w, c.h)
			for range b.N {
				results := map[bool][]g2gRun{}
				for i := range runs {
					order := []bool{true, false}
					if i%2 == 1 {
						order = []bool{false, true}
					}
					for _, pd0 := range order {
						results[pd0] = append(results[pd0], benchOnce(b, g, c.w, c.h, c.fps, pd0, window))
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

// reportRuns prints and records the median run of a configuration, the
// range of its runs, and every run's figures in the order they ran.
func reportRuns(b *testing.B, name string, runs []g2gRun) {
	per := func(f func(g2gRun) float64) []float64 {
		out := make([]float64, len(runs))
		for i, r := range runs {
			out[i] = f(r)
		}
		return out
	}
	benchout.Record("g2g-runs/"+name, "ms", per(func(r g2gRun) float64 { return r.p50 }))
	benchout.Record("g2g-decoded-runs/"+name, "ms", per(func(r g2gRun) float64 { return r.decodedP50 }))
	benchout.Record("fps-encoded-runs/"+name, "fps", per(func(r g2gRun) float64 { return r.fpsEncoded }))
	benchout.Record("fps-decoded-runs/"+name, "fps", per(func(r g2gRun) float64 { return r.fpsChrome }))
	benchout.Record("fps-shown-runs/"+name, "fps", per(func(r g2gRun) float64 { return r.fpsShown }))
	benchout.Record("samples-runs/"+name, "stamps", per(func(r g2gRun) float64 { return float64(len(r.g2g)) }))
	benchout.Record("clock-offset-runs/"+name, "ms", per(func(r g2gRun) float64 { return r.clockOffset }))
	benchout.Record("clock-error-runs/"+name, "ms", per(func(r g2gRun) float64 { return r.clockErr }))
	benchout.Record("misreads/"+name, "stamps", per(func(r g2gRun) float64 { return float64(r.misreads) }))
	benchout.Record("glass-misreads/"+name, "stamps", per(func(r g2gRun) float64 { return float64(r.glassMisreads) }))
	benchout.Record("unmatched/"+name, "stamps", per(func(r g2gRun) float64 { return float64(r.glassUnmatched) }))
	benchout.Record("decoded-unmatched/"+name, "stamps", per(func(r g2gRun) float64 { return float64(r.decodedUnmatched) }))
	benchout.Record("page-unmatched/"+name, "stamps", per(func(r g2gRun) float64 { return float64(r.pageUnmatched) }))
	benchout.Record("decoded-coverage-runs/"+name, "share", per(func(r g2gRun) float64 { return r.decodedCoverage }))
	benchout.Record("glass-poll-rate-runs/"+name, "1/s", per(func(r g2gRun) float64 { return r.pollRate }))
	benchout.Record("glass-poll-gap-runs/"+name, "ms", per(func(r g2gRun) float64 { return r.pollGap }))
	benchout.Record("stamp-rate/"+name, "1/s", per(func(r g2gRun) float64 { return r.stampsPerSec }))

	sorted := slices.Clone(runs)
	slices.SortFunc(sorted, func(a, b g2gRun) int { return cmpFloat(a.p50, b.p50) })
	m := sorted[len(sorted)/2]
	benchout.Record("g2g/"+name, "ms", m.g2g)
	benchout.Record("g2g-decoded/"+name, "ms", m.decoded)
	benchout.Record("encode/"+name, "ms", m.enc)
	benchout.Record("cpu/"+name, "%", []float64{m.cpu})
	benchout.Record("fps-encoded/"+name, "fps", []float64{m.fpsEncoded})
	benchout.Record("fps-decoded/"+name, "fps", []float64{m.fpsChrome})
	benchout.Record("fps-shown/"+name, "fps", []float64{m.fpsShown})
	benchout.Record("page-paint/"+name, "ms", m.pagePaint)
	benchout.Record("page-paint-runs/"+name, "ms", per(func(r g2gRun) float64 { return benchout.Percentile(r.pagePaint, 50) }))
	// First frames: every run's (one per run), not the median run's alone.
	benchout.Record("nav-to-frame/"+name, "ms", per(func(r g2gRun) float64 { return r.navToFrame }))
	benchout.Record("post-to-frame/"+name, "ms", per(func(r g2gRun) float64 { return r.postToFrame }))
	fmt.Printf("%s (encoder %s): glass-to-glass p50 %.1f ms (runs %.1f-%.1f), p95 %.1f ms, to decoded p50 %.1f ms, %d samples, %d+%d misreads, %d unmatched, %.0f stamps/s; "+
		"%.1f fps encoded, %.1f decoded by Chromium, %.1f shown; capture-to-encoded p50 %.1f ms; CPU %.0f%%; first frame %.0f ms after navigation, %.0f ms after the WHEP POST\n",
		name, m.encoder, m.p50, sorted[0].p50, sorted[len(sorted)-1].p50, m.p95, m.decodedP50, len(m.g2g), m.misreads, m.glassMisreads, m.glassUnmatched+m.decodedUnmatched, m.stampsPerSec,
		m.fpsEncoded, m.fpsChrome, m.fpsShown, benchout.Percentile(m.enc, 50), m.cpu, m.navToFrame, m.postToFrame)
	for i, r := range runs {
		fmt.Printf("  run %d: glass p50 %.1f ms, decoded p50 %.1f ms (%.0f%% of decoded frames read), %d samples, %.1f/%.1f/%.1f fps encoded/decoded/shown, glass read %.0f/s (longest gap %.1f ms), page clock %+.2f ms (±%.2f), the page's own stamp to the screen p50 %.1f ms (%d)\n",
			i+1, r.p50, r.decodedP50, r.decodedCoverage*100, len(r.g2g), r.fpsEncoded, r.fpsChrome, r.fpsShown, r.pollRate, r.pollGap, r.clockOffset, r.clockErr, benchout.Percentile(r.pagePaint, 50), len(r.pagePaint))
	}
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

func benchOnce(b *testing.B, g *glass, w, h, fps int, pd0 bool, window time.Duration) g2gRun {
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
	tab := g.browser // the glass's one tab, in front
	// The page as a player gets it: without the statistics overlay, whose
	// repaint every second the tests' pages (#stats=1) carry.
	page := strings.Replace(r.playerURL(b, token.RoleOwner), "#stats=1&", "#", 1)
	if err := chromedp.Do(tab, chromedp.Navigate(page)); err != nil {
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
	res.navToFrame, res.postToFrame, res.encoder = first[0], first[1], r.Encoder()
	if _, err := browsertest.Eval[int](tab, pinVideo); err != nil {
		b.Fatal(err)
	}
	// Where the viewport's corner (the video's, pinned there) is on the
	// screen: browser UI, if any, sits above it.
	corner, err := browsertest.Eval[[]int](tab, `[window.screenX + window.outerWidth - window.innerWidth, window.screenY + window.outerHeight - window.innerHeight]`)
	if err != nil {
		b.Fatal(err)
	}
	x0, y0, err := g.locate(corner[0], corner[1], 10*time.Second)
	if err != nil {
		b.Fatal(err)
	}
	ctx, stopWatch := context.WithCancel(context.Background())
	defer stopWatch()
	shown := g.watch(ctx, x0, y0)

	// The glass's window, after a second of warm-up: nothing runs on the
	// page but the player.
	time.Sleep(time.Second)
	shown.reset()
	mu.Lock()
	enc = enc[:0]
	mu.Unlock()
	const decodedJS = `metal.state.pc.getStats().then(r => { let n = 0; r.forEach(s => { if (s.type === "inbound-rtp" && s.kind === "video") n = s.framesDecoded; }); return n; })`
	decoded0, _ := browsertest.Eval[float64](tab, decodedJS)
	cpu0, t0, frames0, stamps0 := benchout.ProcessCPU(0), time.Now(), r.media.Frames(), r.stamps.Load()
	time.Sleep(window)
	stopWatch()
	decoded1, _ := browsertest.Eval[float64](tab, decodedJS)
	elapsed := time.Since(t0).Seconds()
	res.cpu = (benchout.ProcessCPU(0) - cpu0).Seconds() / elapsed * 100
	res.fpsEncoded = float64(r.media.Frames()-frames0) / elapsed
	res.fpsChrome = (decoded1 - decoded0) / elapsed
	res.stampsPerSec = float64(r.stamps.Load()-stamps0) / elapsed
	// drawnAt is when stamp n was drawn (ms, Go's clock), or false for one
	// not drawn in this run's last second.
	drawnAt := func(n uint16, seen float64) (float64, bool) {
		drawn := r.StampDrawnAt(n)
		at := float64(drawn.UnixMicro()) / 1000
		return at, !drawn.IsZero() && seen > at && seen-at < 1000
	}
	// The glass's stamps are matched now, while their draw times are
	// fresh (the counter wraps after 4096 stamps, 17 s at 60 fps).
	shown.mu.Lock()
	res.glassMisreads, res.pollRate, res.pollGap = shown.misreads, float64(shown.reads)/elapsed, shown.maxGap.Seconds()*1000
	res.fpsShown = float64(len(shown.shown)) / elapsed
	for n, t := range shown.shown {
		seen := float64(t.UnixMicro()) / 1000
		at, ok := drawnAt(n, seen)
		if !ok {
			res.glassUnmatched++ // counted, not measured
			continue
		}
		res.g2g = append(res.g2g, seen-at)
	}
	readErr := shown.err
	shown.mu.Unlock()
	if readErr != nil {
		b.Fatalf("reading the glass: %v", readErr)
	}

	// The decoded window: the page reads each decoded frame's stamp for
	// 3 s. The read-back stops before the clock calibration, so that it
	// meets a page with nothing else to do.
	if _, err := browsertest.Eval[int](tab, frameCodeHarness); err != nil {
		b.Fatal(err)
	}
	decodedA, _ := browsertest.Eval[float64](tab, decodedJS)
	time.Sleep(3 * time.Second)
	samples, err := browsertest.Eval[[][2]float64](tab, `(window.g2gStop = true, window.g2g)`)
	if err != nil {
		b.Fatal(err)
	}
	decodedB, _ := browsertest.Eval[float64](tab, decodedJS)
	time.Sleep(100 * time.Millisecond)
	res.clockOffset, res.clockErr, err = pageClockOffset(tab)
	if err != nil {
		b.Fatal(err)
	}
	// Then, for comparison, the browser's own paint path: a stamp the page
	// draws itself (a DOM change, no video), from the moment the page
	// changes it to the moment the screen shows it, for 2 s.
	if _, err := browsertest.Eval[int](tab, fmt.Sprintf(pageStampHarness, pageStampTop)); err != nil {
		b.Fatal(err)
	}
	pctx, stopPage := context.WithCancel(context.Background())
	pageShown := g.watch(pctx, x0, y0+pageStampTop)
	time.Sleep(2 * time.Second)
	stopPage()
	pageAt, err := browsertest.Eval[[]float64](tab, `(clearInterval(window.pageTimer), window.pageAt.map(t => t || 0))`)
	if err != nil {
		b.Fatal(err)
	}
	res.misreads, _ = browsertest.Eval[int](tab, `window.misreads`)
	// Calibrated again with the page stamp stopped; the tighter one holds.
	if off, e, err := pageClockOffset(tab); err == nil && e < res.clockErr {
		res.clockOffset, res.clockErr = off, e
	}
	for _, s := range samples {
		n, dec := uint16(s[0]), s[1]-res.clockOffset // on Go's clock
		at, ok := drawnAt(n, dec)
		if !ok {
			res.decodedUnmatched++
			continue
		}
		res.decoded = append(res.decoded, dec-at)
	}
	// How many of the frames Chromium decoded in that window the page read
	// back: the read-back skips frames when the page is slower than the
	// stream (1080p60 on 2 cores).
	if decodedB > decodedA {
		res.decodedCoverage = float64(len(samples)+res.misreads) / (decodedB - decodedA)
	}
	pageShown.mu.Lock()
	for n, t := range pageShown.shown {
		if int(n) >= len(pageAt) || pageAt[n] == 0 {
			res.pageUnmatched++
			continue
		}
		set := pageAt[n] - res.clockOffset // on Go's clock
		if seen := float64(t.UnixMicro()) / 1000; seen > set && seen-set < 1000 {
			res.pagePaint = append(res.pagePaint, seen-set)
		} else {
			res.pageUnmatched++
		}
	}
	pageShown.mu.Unlock()
	// A run that read back (almost) no stamps measures nothing: it fails
	// rather than sorting first as a 0 ms run.
	if min := 20; len(res.g2g) < min || len(res.decoded) < min {
		b.Fatalf("%dx%d@%d: %d stamps read on the glass and %d decoded in %s (%d+%d misreads, %d+%d unmatched), want at least %d each",
			w, h, fps, len(res.g2g), len(res.decoded), window, res.misreads, res.glassMisreads, res.glassUnmatched, res.decodedUnmatched, min)
	}
	mu.Lock()
	res.enc = slices.Clone(enc)
	mu.Unlock()
	res.p50, res.p95 = benchout.Percentile(res.g2g, 50), benchout.Percentile(res.g2g, 95)
	res.decodedP50 = benchout.Percentile(res.decoded, 50)
	// This run's page and streamer end here, not with the benchmark: the
	// next run has the machine to itself.
	if err := chromedp.Do(tab, chromedp.Navigate("about:blank")); err != nil {
		b.Fatal(err)
	}
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
