package streamer

import (
	"strings"
	"testing"

	"github.com/pion/sdp/v3"
)

func offerWith(t *testing.T, codecs ...string) *sdp.SessionDescription {
	t.Helper()
	var b strings.Builder
	b.WriteString("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF")
	for i := range codecs {
		b.WriteString(" " + string(rune('0'+i)) + "00")
	}
	b.WriteString("\r\n")
	for i, c := range codecs {
		pt := string(rune('0'+i)) + "00"
		name, fmtp, _ := strings.Cut(c, " ")
		b.WriteString("a=rtpmap:" + pt + " " + name + "/90000\r\n")
		if fmtp != "" {
			b.WriteString("a=fmtp:" + pt + " " + fmtp + "\r\n")
		}
	}
	var d sdp.SessionDescription
	if err := d.UnmarshalString(b.String()); err != nil {
		t.Fatal(err)
	}
	return &d
}

// TestAnswerFmtp: a stream is answered with the best offered profile whose
// decoders take it, at the stream's level; an offer without one is refused
// with what it offered.
func TestAnswerFmtp(t *testing.T) {
	high := branch{Encoder: EncoderNVH264, Profile: ProfileHigh, LevelIdc: 42}
	cb := branch{Encoder: EncoderX264, Profile: ProfileConstrainedBaseline, LevelIdc: 31}
	vp8 := branch{Encoder: EncoderVP8}
	pm1 := func(plid string) string {
		return "H264 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=" + plid
	}
	debian := []string{pm1("42e01f"), pm1("f4001f"), pm1("42001f"), pm1("4d001f"), "VP8"}
	for _, tt := range []struct {
		name   string
		stream branch
		offer  []string
		want   string // profile-level-id answered; "" for an error
	}{
		{"High to Chrome", high, []string{pm1("42e01f"), pm1("64001f"), pm1("f4001f")}, "64002a"},
		{"High to Debian's Chromium (no 64: High 4:4:4 Predictive decodes it)", high, debian, "f4002a"},
		{"High to constrained high only", high, []string{pm1("640c1f")}, "640c2a"},
		{"High to a baseline-only browser", high, []string{pm1("42e01f"), pm1("42001f")}, ""},
		{"High, packetization mode 0 only", high, []string{"H264 profile-level-id=64001f"}, ""},
		{"constrained baseline to Debian's Chromium", cb, debian, "42e01f"},
		{"constrained baseline to a Main-only offer", cb, []string{pm1("4d001f")}, "4d001f"},
		{"VP8 only", cb, []string{"VP8"}, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := answerFmtp(offerWith(t, tt.offer...), tt.stream)
			if tt.want == "" {
				if err == nil {
					t.Fatalf("answered %q, want an error", got)
				}
				return
			}
			if err != nil || got != "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id="+tt.want {
				t.Fatalf("answer %q (%v), want profile-level-id %s", got, err, tt.want)
			}
		})
	}
	if _, err := answerFmtp(offerWith(t, debian...), vp8); err != nil {
		t.Errorf("VP8 stream, VP8 offered: %v", err)
	}
	if _, err := answerFmtp(offerWith(t, pm1("42e01f")), vp8); err == nil {
		t.Error("VP8 stream answered an offer without VP8")
	}
}
