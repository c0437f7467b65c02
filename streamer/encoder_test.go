package streamer

import (
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
)

type fakeProbe struct {
	has    map[string]bool
	broken map[string]bool
}

func (f fakeProbe) HasElement(n string) bool { return f.has[n] }
func (f fakeProbe) Probe(n string) error {
	if f.broken[n] {
		return errors.New("could not open encoder session")
	}
	return nil
}

func TestChooseEncoder(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	all := map[string]bool{EncoderNVH264: true, EncoderX264: true, EncoderVP8: true}
	tests := []struct {
		name   string
		prefer string
		probe  fakeProbe
		want   string
		err    bool
	}{
		{"nvenc works", "auto", fakeProbe{has: all}, EncoderNVH264, false},
		{"nvenc registered but no encoder (H100)", "auto", fakeProbe{has: all, broken: map[string]bool{EncoderNVH264: true}}, EncoderX264, false},
		{"no nvcodec plugin", "auto", fakeProbe{has: map[string]bool{EncoderX264: true, EncoderVP8: true}}, EncoderX264, false},
		{"only vp8", "auto", fakeProbe{has: map[string]bool{EncoderVP8: true}}, EncoderVP8, false},
		{"nothing", "auto", fakeProbe{}, "", true},
		{"forced x264", EncoderX264, fakeProbe{has: all}, EncoderX264, false},
		{"forced nvenc absent", EncoderNVH264, fakeProbe{has: map[string]bool{EncoderX264: true}}, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ChooseEncoder(tt.prefer, tt.probe, log)
			if (err != nil) != tt.err || got != tt.want {
				t.Fatalf("ChooseEncoder = %q, %v; want %q, err=%v", got, err, tt.want, tt.err)
			}
			if err != nil && !errors.Is(err, ErrNoEncoder) {
				t.Fatalf("error %v does not wrap ErrNoEncoder", err)
			}
		})
	}
}

func TestPipelineDescriptions(t *testing.T) {
	d := videoPipeline(":9", EncoderX264, 1920, 1080, 60, 5000)
	for _, want := range []string{"ximagesrc display-name=:9", "framerate=60/1", "width=1920,height=1080",
		"tune=zerolatency", "speed-preset=ultrafast", "bframes=0", "bitrate=5000", "appsink name=sink", "profile=constrained-baseline"} {
		if !strings.Contains(d, want) {
			t.Errorf("x264 pipeline lacks %q: %s", want, d)
		}
	}
	if p, v := bitrateProperty(EncoderVP8, 2000); p != "target-bitrate" || v != "2000000" {
		t.Errorf("vp8 bitrate property = %s=%s", p, v)
	}
	if !strings.Contains(encoderDesc(EncoderNVH264, 30, 1), "zerolatency=true") {
		t.Error("nvenc not in zero-latency mode")
	}
}
