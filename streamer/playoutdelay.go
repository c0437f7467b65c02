package streamer

import (
	"strings"

	"github.com/pion/interceptor"
	"github.com/pion/rtp"
)

// PlayoutDelayURI is the RTP header extension that tells the receiver how
// long it may buffer before rendering
// (http://www.webrtc.org/experiments/rtp-hdrext/playout-delay).
const PlayoutDelayURI = "http://www.webrtc.org/experiments/rtp-hdrext/playout-delay"

// playoutDelayFactory adds the playout-delay extension with min = max = 0 to
// every outgoing video packet when it was negotiated. Chromium then renders
// each frame as soon as it is decoded.
type playoutDelayFactory struct{}

func (playoutDelayFactory) NewInterceptor(string) (interceptor.Interceptor, error) {
	return &playoutDelay{}, nil
}

type playoutDelay struct{ interceptor.NoOp }

// zeroDelay is the 3-byte payload: 12 bits min, 12 bits max, in 10 ms units.
var zeroDelay = []byte{0, 0, 0}

func (*playoutDelay) BindLocalStream(info *interceptor.StreamInfo, w interceptor.RTPWriter) interceptor.RTPWriter {
	if !strings.HasPrefix(strings.ToLower(info.MimeType), "video/") {
		return w
	}
	var id uint8
	for _, e := range info.RTPHeaderExtensions {
		if e.URI == PlayoutDelayURI {
			id = uint8(e.ID)
		}
	}
	if id == 0 {
		return w
	}
	return interceptor.RTPWriterFunc(func(h *rtp.Header, payload []byte, a interceptor.Attributes) (int, error) {
		if err := h.SetExtension(id, zeroDelay); err != nil {
			return 0, err
		}
		return w.Write(h, payload, a)
	})
}
