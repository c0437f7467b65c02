package streamer

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/rtp"
	"github.com/pion/rtp/codecs"
	"github.com/pion/webrtc/v4"
	"github.com/pion/webrtc/v4/pkg/media/samplebuilder"

	"github.com/metal-stream/metal/internal/token"
)

// viewer is a receiving WHEP peer in Go (pion): it negotiates like the
// player page, reads every video RTP packet and counts frames (RTP marker
// bits), so a benchmark can tell the frame rate a viewer actually gets
// (capture, encode, packetise, send, receive) without a browser's decode
// cost on the same cores.
type viewer struct {
	pc     *webrtc.PeerConnection
	input  *webrtc.DataChannel
	frames atomic.Uint64
}

func (v *viewer) Frames() uint64 { return v.frames.Load() }

// dialViewer connects a viewer to the streamer s with an owner token.
func dialViewer(t testing.TB, s *Server) *viewer {
	t.Helper()
	signer, _ := token.NewSigner(testKey)
	tok, err := signer.Sign(s.cfg.SessionID, token.RoleOwner, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return dialViewerWith(t, s, tok)
}

// dialViewerWith connects a viewer with the token tok.
func dialViewerWith(t testing.TB, s *Server, tok string) *viewer {
	t.Helper()
	m := &webrtc.MediaEngine{}
	if err := m.RegisterDefaultCodecs(); err != nil {
		t.Fatal(err)
	}
	// NACKs and receiver reports, as a browser sends them, so the streamer
	// retransmits and adapts as it would for a player.
	ir := &interceptor.Registry{}
	if err := webrtc.RegisterDefaultInterceptors(m, ir); err != nil {
		t.Fatal(err)
	}
	var se webrtc.SettingEngine
	se.SetIncludeLoopbackCandidate(true)
	se.SetInterfaceFilter(func(name string) bool { return name == "lo" })
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	pc, err := webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithSettingEngine(se), webrtc.WithInterceptorRegistry(ir)).NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	v := &viewer{pc: pc}
	t.Cleanup(func() { _ = pc.Close() })
	if _, err := pc.AddTransceiverFromKind(webrtc.RTPCodecTypeVideo, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
		t.Fatal(err)
	}
	if _, err := pc.AddTransceiverFromKind(webrtc.RTPCodecTypeAudio, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
		t.Fatal(err)
	}
	if v.input, err = pc.CreateDataChannel("input", nil); err != nil {
		t.Fatal(err)
	}
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		// Video is depacketised into whole frames (what a decoder would
		// get): a frame counts once all its packets arrived.
		var sb *samplebuilder.SampleBuilder
		if tr.Kind() == webrtc.RTPCodecTypeVideo {
			var depacketizer rtp.Depacketizer = &codecs.H264Packet{}
			if strings.EqualFold(tr.Codec().MimeType, webrtc.MimeTypeVP8) {
				depacketizer = &codecs.VP8Packet{}
			}
			sb = samplebuilder.New(128, depacketizer, tr.Codec().ClockRate)
		}
		for {
			p, _, err := tr.ReadRTP()
			if err != nil {
				return
			}
			if sb == nil {
				continue
			}
			sb.Push(p)
			for s := sb.Pop(); s != nil; s = sb.Pop() {
				if len(s.Data) > 0 {
					v.frames.Add(1)
				}
			}
		}
	})
	offer, err := pc.CreateOffer(nil)
	if err != nil {
		t.Fatal(err)
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(offer); err != nil {
		t.Fatal(err)
	}
	<-gathered
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, s.URL()+"/whep", bytes.NewBufferString(pc.LocalDescription().SDP))
	req.Header.Set("Content-Type", "application/sdp")
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	answer, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("WHEP POST: %d %s", resp.StatusCode, answer)
	}
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: string(answer)}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for v.Frames() < 5 {
		if time.Now().After(deadline) {
			t.Fatal(fmt.Errorf("viewer got %d frames in 15 s (ICE %s)", v.Frames(), pc.ICEConnectionState()))
		}
		time.Sleep(50 * time.Millisecond)
	}
	return v
}
