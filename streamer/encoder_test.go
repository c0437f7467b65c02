package streamer

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/metal-stream/metal/streamer/internal/gst"
)

// The pad templates GStreamer 1.22's nvh264enc registers on an NVENC GPU
// (its documentation caps, captured on an RTX 2080). No machine here has
// NVENC, so the NVENC branch is checked against these with GStreamer's own
// caps intersection; on a GPU, CheckPads reads the real ones.
const (
	nvh264encSink = "video/x-raw, format=(string){ NV12, YV12, I420, BGRA, RGBA, Y444, VUYA }, width=(int)[ 145, 4096 ], height=(int)[ 49, 4096 ], framerate=(fraction)[ 0/1, 2147483647/1 ], interlace-mode=(string)progressive; " +
		"video/x-raw(memory:GLMemory), format=(string){ NV12, YV12, I420, BGRA, RGBA, Y444, VUYA }, width=(int)[ 145, 4096 ], height=(int)[ 49, 4096 ], framerate=(fraction)[ 0/1, 2147483647/1 ], interlace-mode=(string)progressive; " +
		"video/x-raw(memory:CUDAMemory), format=(string){ NV12, YV12, I420, BGRA, RGBA, Y444, VUYA }, width=(int)[ 145, 4096 ], height=(int)[ 49, 4096 ], framerate=(fraction)[ 0/1, 2147483647/1 ], interlace-mode=(string)progressive"
	nvh264encSrc = "video/x-h264, width=(int)[ 145, 4096 ], height=(int)[ 49, 4096 ], framerate=(fraction)[ 0/1, 2147483647/1 ], stream-format=(string)byte-stream, alignment=(string)au, profile=(string){ main, high, high-4:4:4, baseline }"
)

// nvcudah264enc's (GStreamer 1.22, "since 1.22"), documentation caps.
const (
	nvcudaSink = "video/x-raw(memory:CUDAMemory), format=(string){ NV12, YV12, I420, NV16, Y444, VUYA, RGBA, RGBx, BGRA, BGRx, RGB10A2_LE, Y444_16LE }, width=(int)[ 160, 4096 ], height=(int)[ 64, 4096 ], framerate=(fraction)[ 0/1, 2147483647/1 ], interlace-mode=(string)progressive; " +
		"video/x-raw, format=(string){ NV12, YV12, I420, NV16, Y444, VUYA, RGBA, RGBx, BGRA, BGRx, RGB10A2_LE, Y444_16LE }, width=(int)[ 160, 4096 ], height=(int)[ 64, 4096 ], framerate=(fraction)[ 0/1, 2147483647/1 ], interlace-mode=(string)progressive"
	nvcudaSrc = "video/x-h264, width=(int)[ 160, 4096 ], height=(int)[ 64, 4096 ], stream-format=(string){ avc, byte-stream }, alignment=(string)au, profile=(string){ main, high, high-4:4:4, baseline, constrained-baseline }"
)

var nvcudaProps = map[string]bool{"preset": true, "rate-control": true, "zero-reorder-delay": true, "gop-size": true,
	"b-frames": true, "bitrate": true, "aud": true, "rc-lookahead": true, "vbv-buffer-size": true, "repeat-sequence-header": true}

// nvh264encProps are its properties on such a GPU (bframes, rc-lookahead
// and vbv-buffer-size are conditional on the GPU's capabilities).
var nvh264encProps = map[string]bool{"preset": true, "rc-mode": true, "zerolatency": true, "gop-size": true,
	"bitrate": true, "aud": true, "bframes": true, "rc-lookahead": true, "vbv-buffer-size": true}

// fakeGPU is GStreamer as a GPU machine with NVENC registers it: the real
// GStreamer here for every other element, the templates above for the
// NVENC elements. broken encoders fail their test pipeline (an H100: the plugin
// registers nvh264enc, no session opens).
type fakeGPU struct {
	t      *testing.T
	has    map[string]bool // elements registered; nil means "as GStreamer here, plus nvh264enc"
	props  map[string]bool // nvh264enc's properties
	broken map[string]bool
	// presets are the NVENC preset nicks; nil: 1.22's.
	presets []string
}

func (f *fakeGPU) HasElement(n string) bool {
	if f.has != nil {
		return f.has[n]
	}
	return isNVENC(n) || n == "cudaupload" || n == "cudaconvert" || gst.HasElement(n)
}

func (f *fakeGPU) Properties(el string, names []string) (map[string]bool, error) {
	switch el {
	case EncoderNVH264:
		return f.props, nil
	case EncoderNVCUDAH264:
		return nvcudaProps, nil
	}
	return gst.Properties(el, names)
}

// legacyPresets are 1.22's preset nicks for both NVENC elements; newPresets
// what GStreamer 1.24's nvcudah264enc adds.
var (
	legacyPresets = []string{"default", "hp", "hq", "low-latency", "low-latency-hq", "low-latency-hp", "lossless", "lossless-hp"}
	newPresets    = append(slices.Clone(legacyPresets), "p1", "p2", "p3", "p4", "p5", "p6", "p7")
)

func (f *fakeGPU) EnumNicks(el, prop string) []string {
	switch {
	case !isNVENC(el):
		return gst.EnumNicks(el, prop)
	case prop == "preset" && f.presets != nil:
		return f.presets
	case prop == "preset":
		return legacyPresets
	case prop == "tune" && f.presets != nil:
		return []string{"default", "high-quality", "low-latency", "ultra-low-latency", "lossless"}
	}
	return nil
}

func (f *fakeGPU) CheckPads(el, sinkCaps, srcCaps string) error {
	sink, src := nvh264encSink, nvh264encSrc
	switch el {
	case EncoderNVH264:
	case EncoderNVCUDAH264:
		sink, src = nvcudaSink, nvcudaSrc
	default:
		return gst.CheckPads(el, sinkCaps, srcCaps)
	}
	for _, side := range [][2]string{{sinkCaps, sink}, {srcCaps, src}} {
		if side[0] == "" {
			continue
		}
		ok, err := gst.CanIntersect(side[0], side[1])
		if err != nil {
			f.t.Fatal(err)
		}
		if !ok {
			return errors.New("nvh264enc's pad template does not allow " + side[0])
		}
	}
	return nil
}

func (f *fakeGPU) Probe(desc string) error {
	for enc := range f.broken {
		if strings.Contains(desc, enc+" name=enc") {
			return errors.New("could not open encoder session")
		}
	}
	if strings.Contains(desc, EncoderNVH264) || strings.Contains(desc, EncoderNVCUDAH264) {
		return nil // no NVENC here to run it
	}
	return gst.Probe(desc, 10*time.Second)
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

var p720 = videoParams{Width: 1280, Height: 720, FPS: 30, Kbps: 4000, Profile: "auto"}

func TestChooseEncoder(t *testing.T) {
	all := map[string]bool{EncoderNVCUDAH264: false, EncoderNVH264: true, EncoderX264: true, EncoderVP8: true}
	tests := []struct {
		name    string
		prefer  string
		f       *fakeGPU
		want    string
		skipped []string
		err     bool
	}{
		{"nvcudah264enc first", "auto", &fakeGPU{}, EncoderNVCUDAH264, nil, false},
		{"nvcudah264enc broken, nvh264enc works", EncoderNVENC, &fakeGPU{broken: map[string]bool{EncoderNVCUDAH264: true}}, EncoderNVH264, []string{EncoderNVCUDAH264}, false},
		{"nvenc works", "auto", &fakeGPU{has: all}, EncoderNVH264, []string{EncoderNVCUDAH264}, false},
		{"nvenc registered but no encoder (H100)", "auto", &fakeGPU{has: all, broken: map[string]bool{EncoderNVH264: true}}, EncoderX264, []string{EncoderNVCUDAH264, EncoderNVH264}, false},
		{"no nvcodec plugin", "auto", &fakeGPU{has: map[string]bool{EncoderX264: true, EncoderVP8: true}}, EncoderX264, []string{EncoderNVCUDAH264, EncoderNVH264}, false},
		{"nvenc lacks a required property", "auto", &fakeGPU{has: all, props: map[string]bool{"preset": true}}, EncoderX264, []string{EncoderNVCUDAH264, EncoderNVH264}, false},
		{"only vp8", "auto", &fakeGPU{has: map[string]bool{EncoderVP8: true}}, EncoderVP8, []string{EncoderNVCUDAH264, EncoderNVH264, EncoderX264}, false},
		{"nothing", "auto", &fakeGPU{has: map[string]bool{}}, "", nil, true},
		{"forced x264", EncoderX264, &fakeGPU{has: all}, EncoderX264, nil, false},
		{"nvenc or nothing, on a GPU without it", EncoderNVENC, &fakeGPU{has: all, broken: map[string]bool{EncoderNVH264: true}}, "", nil, true},
		{"forced nvenc absent", EncoderNVH264, &fakeGPU{has: map[string]bool{EncoderX264: true}}, "", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.f.t = t
			if tt.f.props == nil {
				tt.f.props = nvh264encProps
			}
			b, skipped, err := ChooseEncoder(tt.prefer, p720, tt.f, quiet)
			if (err != nil) != tt.err || b.Encoder != tt.want {
				t.Fatalf("ChooseEncoder = %q, %v; want %q, err=%v", b.Encoder, err, tt.want, tt.err)
			}
			if err != nil && !errors.Is(err, ErrNoEncoder) {
				t.Fatalf("error %v does not wrap ErrNoEncoder", err)
			}
			for _, enc := range tt.skipped {
				if skipped[enc] == "" {
					t.Errorf("no reason given for skipping %s: %v", enc, skipped)
				}
			}
			if !tt.err && len(skipped) != len(tt.skipped) {
				t.Errorf("skipped %v, want reasons for exactly %v", skipped, tt.skipped)
			}
		})
	}
}

// TestNVENCBranchNegotiates: the NVENC branch asks nvh264enc for a profile
// its source template offers, converts on the GPU into memory its sink
// template takes, and carries the low-latency settings; constrained
// baseline (the old branch) is refused by the template check, which is what
// made every GPU fall back to x264.
func TestNVENCBranchNegotiates(t *testing.T) {
	f := &fakeGPU{t: t, props: nvh264encProps}
	b, err := buildBranch(EncoderNVH264, p720, f)
	if err != nil {
		t.Fatal(err)
	}
	d := b.desc()
	for _, want := range []string{
		"cudaupload ! cudaconvert ! video/x-raw(memory:CUDAMemory),format=NV12 ! nvh264enc name=enc",
		"preset=low-latency-hq", "rc-mode=cbr", "zerolatency=true", "bframes=0", "gop-size=-1", "bitrate=4000",
		"vbv-buffer-size=133", "aud=false",
		"video/x-h264,profile=high,level=(string)3.1", "h264parse config-interval=-1",
	} {
		if !strings.Contains(d, want) {
			t.Errorf("NVENC branch lacks %q: %s", want, d)
		}
	}
	if got, want := b.Fmtp(), "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=64001f"; got != want {
		t.Errorf("fmtp %q, want %q", got, want)
	}
	cuda, err := buildBranch(EncoderNVCUDAH264, p720, f)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"cudaupload ! cudaconvert ! video/x-raw(memory:CUDAMemory),format=NV12 ! nvcudah264enc name=enc",
		"preset=low-latency-hq", "rate-control=cbr", "zero-reorder-delay=true", "b-frames=0", "gop-size=-1",
		"vbv-buffer-size=133", "repeat-sequence-header=true", "video/x-h264,profile=high,level=(string)3.1",
	} {
		if !strings.Contains(cuda.desc(), want) {
			t.Errorf("nvcudah264enc branch lacks %q: %s", want, cuda.desc())
		}
	}
	if cuda.Fmtp() != b.Fmtp() || len(cuda.Dropped) != 0 {
		t.Errorf("nvcudah264enc fmtp %q (dropped %v), nvh264enc %q", cuda.Fmtp(), cuda.Dropped, b.Fmtp())
	}
	// GStreamer 1.24+: the p1..p7 presets with a tuning, not the legacy
	// ones drivers are dropping.
	nvcudaProps["tune"] = true
	defer delete(nvcudaProps, "tune")
	f.presets = newPresets
	if cuda, err = buildBranch(EncoderNVCUDAH264, p720, f); err != nil || !strings.Contains(cuda.desc(), "preset=p1 tune=ultra-low-latency rate-control=cbr") {
		t.Errorf("1.24 presets: %v, %s", err, cuda.desc())
	}
	f.presets = nil
	// The old branch's caps do not intersect the template.
	if err := f.CheckPads(EncoderNVH264, "", "video/x-h264,profile=constrained-baseline,stream-format=byte-stream,alignment=au"); err == nil {
		t.Error("constrained baseline passed nvh264enc's template check")
	}
	if _, err := buildBranch(EncoderNVH264, videoParams{Width: 1280, Height: 720, FPS: 30, Kbps: 4000, Profile: ProfileConstrainedBaseline}, f); err == nil {
		t.Error("an NVENC branch was built for constrained baseline")
	}
	// Without the conditional properties (a GPU without custom VBV or
	// B-frames), they are left out rather than failing the pipeline.
	f.props = map[string]bool{"preset": true, "rc-mode": true, "zerolatency": true, "gop-size": true, "bitrate": true, "aud": true}
	b, err = buildBranch(EncoderNVH264, p720, f)
	if err != nil || strings.Contains(b.desc(), "vbv-buffer-size") || len(b.Dropped) != 4 {
		t.Errorf("conditional properties: %v, dropped %v, %s", err, b.Dropped, b.desc())
	}
	// Without CUDA conversion elements, conversion stays on the CPU, to NV12.
	f.has = map[string]bool{EncoderNVH264: true}
	f.props = nvh264encProps
	if b, err = buildBranch(EncoderNVH264, p720, f); err != nil || !strings.HasPrefix(b.desc(), "videoconvert n-threads=0 ! video/x-raw,format=NV12 ! nvh264enc") {
		t.Errorf("CPU conversion: %v, %s", err, b.desc())
	}
}

// TestH264Levels: the level is the lowest that holds the size and rate.
func TestH264Levels(t *testing.T) {
	for _, tt := range []struct {
		w, h, fps int
		want      string
	}{
		{640, 360, 30, "3.1"}, {1280, 720, 30, "3.1"}, {1280, 720, 60, "3.2"}, {1920, 1080, 30, "4"},
		{1920, 1080, 60, "4.2"}, {2560, 1440, 60, "5.1"}, {3840, 2160, 30, "5.1"}, {3840, 2160, 60, "5.2"},
	} {
		if got, _ := h264Level(tt.w, tt.h, tt.fps); got != tt.want {
			t.Errorf("%dx%d@%d: level %s, want %s", tt.w, tt.h, tt.fps, got, tt.want)
		}
	}
}

// sps finds the first SPS in an Annex B access unit: profile_idc,
// constraint flags and level_idc.
func sps(au []byte) (profile, flags, level byte, ok bool) {
	for i := 0; i+7 < len(au); i++ {
		if au[i] == 0 && au[i+1] == 0 && au[i+2] == 1 && au[i+3]&0x1f == 7 {
			return au[i+4], au[i+5], au[i+6], true
		}
	}
	return 0, 0, 0, false
}

// TestX264EmitsWhatNVENCWould: x264's branch with -h264-profile high emits
// the profile and level (in its SPS, not only its caps) that the NVENC
// branch asks for at the same size and rate, with the same fmtp; so the
// chain after the encoder, tested with x264 (here and in Chromium), is the
// chain a GPU's stream takes. Constrained baseline stays x264's default.
func TestX264EmitsWhatNVENCWould(t *testing.T) {
	for _, v := range []videoParams{
		{Width: 1280, Height: 720, FPS: 30, Kbps: 4000, Profile: ProfileHigh},
		{Width: 1920, Height: 1080, FPS: 60, Kbps: 8000, Profile: ProfileHigh},
		{Width: 1280, Height: 720, FPS: 30, Kbps: 4000, Profile: "auto"},
	} {
		f := &fakeGPU{t: t, props: nvh264encProps}
		nv, err := buildBranch(EncoderNVH264, v, f)
		if err != nil {
			t.Fatal(err)
		}
		x, err := buildBranch(EncoderX264, v, f)
		if err != nil {
			t.Fatal(err)
		}
		wantProfile, wantFlags := byte(100), byte(0)
		if v.Profile == "auto" {
			wantProfile, wantFlags = 66, 0x40 // constraint_set1: constrained baseline
			if x.Profile != ProfileConstrainedBaseline {
				t.Fatalf("x264's default profile is %s", x.Profile)
			}
		} else if x.Fmtp() != nv.Fmtp() {
			t.Errorf("%+v: x264 fmtp %q, NVENC fmtp %q", v, x.Fmtp(), nv.Fmtp())
		}
		au := firstAccessUnit(t, probePipeline(x, v))
		p, flags, level, ok := sps(au)
		if !ok {
			t.Fatalf("%+v: no SPS in the first access unit", v)
		}
		if p != wantProfile || flags&0x40 != wantFlags || level != x.LevelIdc {
			t.Errorf("%+v: SPS profile_idc %d flags %#x level_idc %d; want %d, %#x, %d", v, p, flags, level, wantProfile, wantFlags, x.LevelIdc)
		}
	}
}

func firstAccessUnit(t *testing.T, desc string) []byte {
	t.Helper()
	got := make(chan []byte, 1)
	pl, err := gst.Launch(desc, func(s gst.Sample) {
		select {
		case got <- s.Data:
		default:
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer pl.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	go func() { _ = pl.Wait(ctx) }()
	select {
	case au := <-got:
		return au
	case <-ctx.Done():
		t.Fatalf("no access unit from %s", desc)
		return nil
	}
}

// TestBranchesFitGStreamer: every branch this machine can run is checked
// against the element as registered (properties, pad templates) and runs.
func TestBranchesFitGStreamer(t *testing.T) {
	for _, enc := range []string{EncoderX264, EncoderVP8} {
		b, skipped, err := ChooseEncoder(enc, p720, gstProbe{}, quiet)
		if err != nil || b.Encoder != enc {
			t.Fatalf("%s: %v %v", enc, err, skipped)
		}
		if len(b.Dropped) != 0 {
			t.Errorf("%s lacks %v", enc, b.Dropped)
		}
	}
	// What no machine here has is not chosen, with the reason.
	b, skipped, err := ChooseEncoder("auto", p720, gstProbe{}, quiet)
	if err != nil || b.Encoder != EncoderX264 || skipped[EncoderNVH264] == "" {
		t.Fatalf("auto chose %q (%v), not chosen: %v", b.Encoder, err, skipped)
	}
	if err := gst.CheckPads(EncoderX264, "video/x-raw(memory:CUDAMemory),format=NV12", ""); err == nil {
		t.Error("x264enc's template took CUDA memory")
	}
}

func TestPipelineDescriptions(t *testing.T) {
	v := videoParams{Width: 1920, Height: 1080, FPS: 60, Kbps: 6000, Profile: "auto"}
	b, err := buildBranch(EncoderX264, v, gstProbe{})
	if err != nil {
		t.Fatal(err)
	}
	d := videoPipeline(":9", b, v, false)
	for _, want := range []string{"ximagesrc display-name=:9 use-damage=false show-pointer=false", "framerate=60/1", "width=1920,height=1080",
		"videoconvert n-threads=0 ! video/x-raw,format=NV12", "tune=zerolatency", "speed-preset=ultrafast", "bframes=0",
		"key-int-max=1073741824", "vbv-buf-capacity=16", "bitrate=6000", "appsink name=sink",
		"profile=constrained-baseline,level=(string)4.2"} {
		if !strings.Contains(d, want) {
			t.Errorf("x264 pipeline lacks %q: %s", want, d)
		}
	}
	if p := bitrateProperties(branch{Encoder: EncoderVP8}, 2000); len(p) != 1 || p[0] != [2]string{"target-bitrate", "2000000"} {
		t.Errorf("vp8 bitrate properties = %v", p)
	}
	nv, err := buildBranch(EncoderNVH264, p720, &fakeGPU{t: t, props: nvh264encProps})
	if err != nil {
		t.Fatal(err)
	}
	// Only the bitrate moves at run time: a VBV change reopens NVENC.
	if p := bitrateProperties(nv, 1200); len(p) != 1 || p[0] != [2]string{"bitrate", "1200"} {
		t.Errorf("nvenc bitrate properties = %v", p)
	}
}
