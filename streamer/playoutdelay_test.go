package streamer

import (
	"testing"

	"github.com/pion/interceptor"
	"github.com/pion/rtp"
)

func TestPlayoutDelayExtension(t *testing.T) {
	var got *rtp.Header
	sink := interceptor.RTPWriterFunc(func(h *rtp.Header, _ []byte, _ interceptor.Attributes) (int, error) {
		got = h
		return 0, nil
	})
	ext := []interceptor.RTPHeaderExtension{{URI: PlayoutDelayURI, ID: 5}}
	tests := []struct {
		name   string
		info   interceptor.StreamInfo
		wantID uint8
	}{
		{"video with extension", interceptor.StreamInfo{MimeType: "video/H264", RTPHeaderExtensions: ext}, 5},
		{"audio untouched", interceptor.StreamInfo{MimeType: "audio/opus", RTPHeaderExtensions: ext}, 0},
		{"not negotiated", interceptor.StreamInfo{MimeType: "video/H264"}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			i, _ := playoutDelayFactory{}.NewInterceptor("")
			w := i.BindLocalStream(&tt.info, sink)
			h := &rtp.Header{Version: 2}
			if _, err := w.Write(h, nil, nil); err != nil {
				t.Fatal(err)
			}
			if tt.wantID == 0 {
				if got.Extension {
					t.Fatal("extension added where it must not be")
				}
				return
			}
			if p := got.GetExtension(tt.wantID); len(p) != 3 || p[0]|p[1]|p[2] != 0 {
				t.Fatalf("extension payload %v, want three zero bytes", p)
			}
		})
	}
}
