// Command benchreport turns the samples `make bench` collects
// (bench-results/samples.jsonl, written by the benchmarks through
// internal/benchout) into a table on stdout, results.json, results.md and
// latency.png (the glass-to-glass latency distributions as CDFs).
package main

import (
	"bufio"
	"cmp"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/metal-stream/metal/internal/benchout"
)

// Row is one figure of the report.
type Row struct {
	Section string  `json:"section"`
	Name    string  `json:"name"`
	Median  float64 `json:"median"`
	P95     float64 `json:"p95"`
	Unit    string  `json:"unit"`
	Samples int     `json:"samples"`
	Note    string  `json:"note,omitempty"`
}

// methodVersion changes whenever what a figure means changes (version 2:
// glass-to-glass from a checked stamp drawn 4x per frame, 5 runs per
// configuration, median run; streams per box with depacketising viewers
// and Xvfb CPU; GPU placements of the real streamer job; version 3: TURN
// servers alone on a core, clients on raw sockets with sendmmsg/recvmmsg;
// version 4: glass-to-glass read from the screen of a Chromium window, the
// decoded figure on a page clock calibrated per run, every run recorded,
// first frames over every run).
const methodVersion = 4

// Report is results.json.
type Report struct {
	Date          time.Time `json:"date"`
	MethodVersion int       `json:"method_version"`
	CPUModel      string    `json:"cpu_model"`
	CPUs          int       `json:"cpus"`
	LoadBefore    string    `json:"load_average_before"`
	LoadAfter     string    `json:"load_average_after"`
	WallSeconds   float64   `json:"wall_seconds,omitempty"`  // make bench, start (before the build) to report
	BuildSeconds  float64   `json:"build_seconds,omitempty"` // of which deps, tools and build
	Command       string    `json:"command"`
	// Versions of what was measured: the commit (with "+dirty" for
	// uncommitted changes), Go, Chromium, GStreamer, coturn, Nomad, Consul.
	Versions map[string]string `json:"versions"`
	Rows     []Row             `json:"rows"`
}

func sum(v []float64) float64 {
	t := 0.0
	for _, x := range v {
		t += x
	}
	return t
}

// loadavg is the first three fields of a /proc/loadavg copy.
func loadavg(b []byte) string {
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

// cpuModel is the first "model name" in /proc/cpuinfo.
func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// versions asks each part measured for its version; "" where it is missing.
func versions() map[string]string {
	first := func(name string, args ...string) string {
		out, err := exec.Command(name, args...).Output()
		if err != nil {
			return ""
		}
		l, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
		return strings.TrimSpace(l)
	}
	commit := first("git", "rev-parse", "--short=12", "HEAD")
	if commit != "" && first("git", "status", "--porcelain", "--untracked-files=no") != "" {
		commit += "+dirty"
	}
	return map[string]string{
		"commit":    commit,
		"go":        runtime.Version(),
		"chromium":  first("chromium", "--version"),
		"gstreamer": first("pkg-config", "--modversion", "gstreamer-1.0"),
		"coturn":    first("dpkg-query", "-W", "-f", "${Version}", "coturn"),
		"nomad":     first("bin/nomad", "version"),
		"consul":    first("bin/consul", "version"),
	}
}

func main() {
	dir := flag.String("dir", "bench-results", "directory with samples.jsonl; the report is written there")
	flag.Parse()
	series, err := read(filepath.Join(*dir, "samples.jsonl"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchreport:", err)
		os.Exit(1)
	}
	after, _ := os.ReadFile("/proc/loadavg")
	before, _ := os.ReadFile(filepath.Join(*dir, "loadavg-before")) // make bench writes it first
	rep := Report{Date: time.Now().UTC(), MethodVersion: methodVersion, CPUModel: cpuModel(), CPUs: runtime.NumCPU(),
		LoadBefore: loadavg(before), LoadAfter: loadavg(after), Command: "make bench", Rows: rows(series)}
	if b, err := os.ReadFile(filepath.Join(*dir, "started")); err == nil { // unix seconds, written by make bench
		if t, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64); err == nil {
			rep.WallSeconds = time.Since(time.Unix(t, 0)).Seconds()
		}
	}
	if b, err := os.ReadFile(filepath.Join(*dir, "built")); err == nil && rep.WallSeconds > 0 {
		if t, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64); err == nil {
			rep.BuildSeconds = rep.WallSeconds - time.Since(time.Unix(t, 0)).Seconds()
		}
	}
	rep.Versions = versions()
	b, _ := json.MarshalIndent(rep, "", "  ")
	if err := os.WriteFile(filepath.Join(*dir, "results.json"), b, 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "benchreport:", err)
		os.Exit(1)
	}
	md := markdown(rep)
	if err := os.WriteFile(filepath.Join(*dir, "results.md"), []byte(md), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "benchreport:", err)
		os.Exit(1)
	}
	var cdfs []benchout.Series
	for _, s := range series {
		if strings.HasPrefix(s.Name, "g2g/") {
			cdfs = append(cdfs, s)
		}
	}
	if err := plot(filepath.Join(*dir, "latency.png"), "Glass-to-glass latency (software encoder), CDF", "ms", cdfs); err != nil {
		fmt.Fprintln(os.Stderr, "benchreport: plot:", err)
		os.Exit(1)
	}
	var bars []bar
	for _, r := range rep.Rows {
		if r.Unit == "ratio" {
			short := strings.NewReplacer("TURN relay, ", "TURN ", "peer → client (streaming)", "peer->client", "client → peer", "client->peer",
				"Metal / coturn ", "Metal/coturn ", "datagrams/s", "pkt/s", "CPU per datagram", "CPU/pkt", " allocation(s)", " alloc")
			bars = append(bars, bar{short.Replace(r.Section + ": " + r.Name), r.Median})
		}
	}
	if len(bars) > 0 {
		if err := plotRatios(filepath.Join(*dir, "ratios.png"), "Ratios (1.0: parity)", bars); err != nil {
			fmt.Fprintln(os.Stderr, "benchreport: plot:", err)
			os.Exit(1)
		}
	}
	fmt.Print(md)
	fmt.Printf("\nwritten: %s, %s, %s, %s\n", filepath.Join(*dir, "results.json"), filepath.Join(*dir, "results.md"),
		filepath.Join(*dir, "latency.png"), filepath.Join(*dir, "ratios.png"))
}

// read merges repeated series of one name (repeated runs) into one.
func read(path string) ([]benchout.Series, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("no samples (run make bench): %w", err)
	}
	defer f.Close()
	byName := map[string]*benchout.Series{}
	var order []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var s benchout.Series
		if json.Unmarshal(sc.Bytes(), &s) != nil {
			continue
		}
		if cur, ok := byName[s.Name]; ok {
			cur.Values = append(cur.Values, s.Values...)
			continue
		}
		byName[s.Name] = &s
		order = append(order, s.Name)
	}
	out := make([]benchout.Series, 0, len(order))
	for _, n := range order {
		out = append(out, *byName[n])
	}
	return out, sc.Err()
}

func rows(series []benchout.Series) []Row {
	get := map[string]benchout.Series{}
	for _, s := range series {
		get[s.Name] = s
	}
	var out []Row
	add := func(section, name, key, note string) {
		s, ok := get[key]
		if !ok {
			return
		}
		out = append(out, Row{Section: section, Name: name, Median: benchout.Percentile(s.Values, 50), P95: benchout.Percentile(s.Values, 95),
			Unit: s.Unit, Samples: len(s.Values), Note: note})
	}
	for _, s := range series {
		cfg, ok := strings.CutPrefix(s.Name, "g2g/")
		if !ok {
			continue
		}
		note := "median run of a stamp drawn 4x per frame on the streamer's X display, read from the pixels of the screen a Chromium window plays it on (polled every 1 ms)"
		if r, ok := get["g2g-runs/"+cfg]; ok {
			note += fmt.Sprintf("; runs' p50 %s-%s ms over %d runs (each run in results.json)", num(slices.Min(r.Values)), num(slices.Max(r.Values)), len(r.Values))
		}
		if m, ok := get["misreads/"+cfg]; ok {
			note += fmt.Sprintf("; misread stamps over all runs: %.0f decoded", sum(m.Values))
		}
		if m, ok := get["glass-misreads/"+cfg]; ok {
			note += fmt.Sprintf(", %.0f on the screen", sum(m.Values))
		}
		if u, ok := get["unmatched/"+cfg]; ok {
			note += fmt.Sprintf("; unmatched %.0f", sum(u.Values))
		}
		if r, ok := get["glass-poll-rate-runs/"+cfg]; ok {
			note += fmt.Sprintf("; screen read %s-%s times a second", num(slices.Min(r.Values)), num(slices.Max(r.Values)))
			if g, ok := get["glass-poll-gap-runs/"+cfg]; ok {
				note += fmt.Sprintf(", longest gap %s ms", num(slices.Max(g.Values)))
			}
		}
		if r, ok := get["stamp-rate/"+cfg]; ok {
			note += fmt.Sprintf("; stamps drawn %s-%s per second", num(slices.Min(r.Values)), num(slices.Max(r.Values)))
		}
		note += belowRate(get, cfg)
		add("glass-to-glass (to the screen)", cfg, s.Name, note)
		dnote := "the same median run, in a 3 s window of its own after the screen's (reading frames back on the page slows the screen); page clock calibrated to the Go clock per run"
		if e, ok := get["clock-error-runs/"+cfg]; ok {
			dnote += fmt.Sprintf(" (within %s ms)", num(slices.Max(e.Values)))
		}
		if r, ok := get["g2g-decoded-runs/"+cfg]; ok {
			dnote += fmt.Sprintf("; runs' p50 %s-%s ms", num(slices.Min(r.Values)), num(slices.Max(r.Values)))
		}
		if c, ok := get["decoded-coverage-runs/"+cfg]; ok {
			dnote += fmt.Sprintf("; the page read back %.0f-%.0f%% of the frames Chromium decoded", 100*slices.Min(c.Values), 100*slices.Max(c.Values))
			if slices.Min(c.Values) < 0.9 {
				dnote += " (**under 90%: frames skipped, the sample is thinned**)"
			}
		}
		if u, ok := get["decoded-unmatched/"+cfg]; ok {
			dnote += fmt.Sprintf("; unmatched %.0f", sum(u.Values))
		}
		add("glass-to-glass (to decoded: presentationTime)", cfg, "g2g-decoded/"+cfg, dnote)
		add("the page's own stamp to the screen (Chromium's paint path, no video)", cfg, "page-paint/"+cfg,
			"the same median run, 2 s after its window: a DOM stamp changed every 4 ms, from the change to the screen"+runsRange(get, "page-paint-runs/"+cfg)+unmatched(get, "page-unmatched/"+cfg))
	}
	for _, s := range series {
		if cfg, ok := strings.CutPrefix(s.Name, "encode/"); ok {
			add("capture-to-encoded", cfg, s.Name, "median run")
			add("frames encoded per second", cfg, "fps-encoded/"+cfg, "median run"+runsRange(get, "fps-encoded-runs/"+cfg))
			add("frames decoded by Chromium per second", cfg, "fps-decoded/"+cfg, "median run, framesDecoded over the window"+runsRange(get, "fps-decoded-runs/"+cfg)+belowRate(get, cfg))
			add("frames shown on the screen per second", cfg, "fps-shown/"+cfg, "median run, distinct stamps the screen showed (at most the browser's 60 Hz paint)"+runsRange(get, "fps-shown-runs/"+cfg))
			add("benchmark process CPU", cfg, "cpu/"+cfg, "the streamer with its GStreamer and X clients, the screen reader (1000 reads a second) and chromedp, in one process; Xvfb and Chromium not included")
			add("page navigation to first decoded frame", cfg, "nav-to-frame/"+cfg, "clock starts at navigation; median and p95 over the runs, one each")
			add("WHEP POST sent to first decoded frame", cfg, "post-to-frame/"+cfg, "clock starts as the POST is sent (after ICE gathering); median and p95 over the runs, one each")
		}
	}
	held := 0
	for n := 1; ; n++ {
		s, ok := get[fmt.Sprintf("streams-per-box/%d", n)]
		if !ok {
			break
		}
		if s.Values[0] >= 29 {
			held = n
		}
		add("streams per box", fmt.Sprintf("%d x 720p30: slowest viewer", n), s.Name, "whole frames per second a Go WHEP viewer depacketised")
		add("streams per box", fmt.Sprintf("%d x 720p30: CPU per stream", n), fmt.Sprintf("streams-per-box-cpu/%d", n), "streamers, their Xvfb and the viewers")
	}
	if _, ok := get["streams-per-box/1"]; ok {
		out = append(out, Row{Section: "streams per box", Name: "720p30 streams at >= 29 fps", Median: float64(held), P95: float64(held), Unit: "streams", Samples: 1})
	}
	add("gateway and Nomad", "player URL to first decoded frame (cold)", "url-to-first-frame", "admission, placement, streamer start, WHEP, ICE")
	add("gateway and Nomad", "player URL to first decoded frame (warm: the same player reloads)", "url-to-first-frame-warm", "the session resumed, not placed: gateway answer, WHEP, ICE")
	add("gateway and Nomad", "placement latency (register to allocation)", "placement-latency", "p95 column is p99")
	if s, ok := get["placement-latency"]; ok {
		out[len(out)-1].P95 = benchout.Percentile(s.Values, 99)
	}
	add("gateway and Nomad", "placements per second (16 in flight, /bin/true, no device)", "placements-per-second", "Nomad alone; not a streamer placement")
	add("gateway and Nomad", "GPU placement latency, 8 in flight (jobs/streamer.nomad.hcl, gpu = true, fake GPUs)", "gpu-placement-latency-8-in-flight", "p95 column is p99")
	if s, ok := get["gpu-placement-latency-8-in-flight"]; ok {
		out[len(out)-1].P95 = benchout.Percentile(s.Values, 99)
	}
	add("gateway and Nomad", "GPU placements per second, 8 in flight (the real streamer job with its device constraint)", "gpu-placements-per-second", "median of 25 rounds")
	add("gateway and Nomad", "gateway status requests per second, 2xx only", "gateway-status-throughput", "8 clients, 3 s measured")
	add("gateway and Nomad", "gateway status answers not 2xx", "gateway-status-not-2xx", "in the same 3 s")
	add("gateway and Nomad", "gateway status transport errors", "gateway-status-errors", "in the same 3 s")
	add("gateway and Nomad", "gateway status latency", "gateway-status-latency", "")
	add("gateways in numbers", "leader failover: SIGKILL of the leading gateway to the new leader's first placement", "leader-failover",
		"10 kills, 3 gateways; seen at a follower; includes the lock check's 2 s TTL")
	add("gateways in numbers", "admissions per second, 1 gateway, 2xx only", "admissions-1-gateways", "12 clients, 3 s")
	add("gateways in numbers", "admissions per second, 3 gateways, 2xx only", "admissions-3-gateways", "12 clients over 3 gateways, 3 s")
	// TURN: runs alternate Metal and coturn, so the i-th runs of each were
	// side by side; ratios are per pair, then the median.
	ratio := func(num, den string) ([]float64, bool) {
		m, okM := get[num]
		c, okC := get[den]
		if !okM || !okC {
			return nil, false
		}
		var r []float64
		for i := range min(len(m.Values), len(c.Values)) {
			if c.Values[i] > 0 {
				r = append(r, m.Values[i]/c.Values[i])
			}
		}
		return r, true
	}
	for _, dir := range []string{"to_client", "to_peer"} {
		label := map[string]string{"to_client": "peer → client (streaming)", "to_peer": "client → peer"}[dir]
		for _, n := range []int{1, 4} {
			key := func(what, server string) string { return fmt.Sprintf("turn-%s-%s/%s/%d", server, what, dir, n) }
			pps, ok := ratio(key("pps", "metal"), key("pps", "coturn"))
			if !ok {
				continue
			}
			sec := "TURN relay, " + label
			add(sec, fmt.Sprintf("Metal datagrams/s, %d allocation(s)", n), key("pps", "metal"), "200-byte datagrams")
			add(sec, fmt.Sprintf("coturn datagrams/s, %d allocation(s)", n), key("pps", "coturn"), "same listener, auth and peer settings; each server alone on a core")
			out = append(out, Row{Section: sec, Name: fmt.Sprintf("Metal / coturn datagrams/s, %d allocation(s)", n),
				Median: benchout.Percentile(pps, 50), P95: benchout.Percentile(pps, 95), Unit: "ratio", Samples: len(pps), Note: "per side-by-side pair, order alternating"})
			if cpu, ok := ratio(key("us", "metal"), key("us", "coturn")); ok {
				out = append(out, Row{Section: sec, Name: fmt.Sprintf("Metal / coturn CPU per datagram, %d allocation(s)", n),
					Median: benchout.Percentile(cpu, 50), P95: benchout.Percentile(cpu, 95), Unit: "ratio", Samples: len(cpu), Note: "server CPU time over datagrams delivered"})
			}
			add(sec, fmt.Sprintf("Metal server CPU, %d allocation(s)", n), key("cpu", "metal"), "% of its one core")
			add(sec, fmt.Sprintf("coturn server CPU, %d allocation(s)", n), key("cpu", "coturn"), "% of its one core")
			add(sec, fmt.Sprintf("datagrams dropped on full receive buffers with Metal, %d allocation(s)", n), key("drops", "metal"), "kernel count, any socket: the offered load exceeds what the server relays")
			add(sec, fmt.Sprintf("datagrams dropped on full receive buffers with coturn, %d allocation(s)", n), key("drops", "coturn"), "kernel count, any socket")
			add(sec, fmt.Sprintf("load generator CPU with Metal, %d allocation(s)", n), key("load", "metal"), "reported apart")
			add(sec, fmt.Sprintf("load generator CPU with coturn, %d allocation(s)", n), key("load", "coturn"), "reported apart")
		}
	}
	return out
}

// runsRange is "; runs a-b" for a per-run series, or "".
func runsRange(get map[string]benchout.Series, key string) string {
	r, ok := get[key]
	if !ok || len(r.Values) == 0 {
		return ""
	}
	return fmt.Sprintf("; runs %s-%s", num(slices.Min(r.Values)), num(slices.Max(r.Values)))
}

// belowRate flags a configuration (for example 1080p60-pd0) any of whose
// runs Chromium decoded at under 95% of its nominal frame rate: such a
// run's figures are not figures at that rate.
func belowRate(get map[string]benchout.Series, cfg string) string {
	mode, _, _ := strings.Cut(cfg, "-")
	_, rate, ok := strings.Cut(mode, "p")
	nominal, err := strconv.Atoi(rate)
	d, have := get["fps-decoded-runs/"+cfg]
	if !ok || err != nil || !have {
		return ""
	}
	below := 0
	for _, v := range d.Values {
		if v < 0.95*float64(nominal) {
			below++
		}
	}
	if below == 0 {
		return ""
	}
	return fmt.Sprintf("; **BELOW RATE: %d of %d runs decoded under 95%% of the nominal %d fps (lowest %s): not %d fps figures**", below, len(d.Values), nominal, num(slices.Min(d.Values)), nominal)
}

// unmatched is "; unmatched N" for a per-run count series, or "".
func unmatched(get map[string]benchout.Series, key string) string {
	u, ok := get[key]
	if !ok {
		return ""
	}
	return fmt.Sprintf("; unmatched %.0f", sum(u.Values))
}

func markdown(r Report) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Metal benchmark (method %d), %s, %s, %d CPUs, load average %s before, %s after, %.1f minutes (`%s`, of which %.1f building)\n\n",
		r.MethodVersion, r.Date.Format(time.RFC3339), r.CPUModel, r.CPUs, r.LoadBefore, r.LoadAfter, r.WallSeconds/60, r.Command, r.BuildSeconds/60)
	var keys []string
	for k := range r.Versions {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for i, k := range keys {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s %s", k, cmp.Or(r.Versions[k], "(missing)"))
	}
	b.WriteString("\n\n")
	fmt.Fprintln(&b, "| section | figure | median | p95 | unit | samples | note |")
	fmt.Fprintln(&b, "|---|---|---:|---:|---|---:|---|")
	for _, row := range r.Rows {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %d | %s |\n", row.Section, row.Name, num(row.Median), num(row.P95), row.Unit, row.Samples, row.Note)
	}
	return b.String()
}

func num(v float64) string {
	switch {
	case v >= 1000:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}
