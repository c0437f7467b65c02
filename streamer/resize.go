package streamer

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/metal-stream/metal/internal/token"
	"github.com/metal-stream/metal/streamer/internal/gst"
)

// The screen follows the owner's window. The player asks for the size its
// video element has on the screen, in device pixels ("resize" on the input
// channel); the streamer fits that within its bounds, stops the capture,
// sets the X screen to it through RandR (the desktop sees a monitor change
// mode, and maximised windows follow) and starts the capture and a new
// encoder at that size. The peers stay connected: the RTP stream goes on,
// and the new encoder's first frame is a key frame with the new SPS/PPS,
// which the browser's decoder follows. Every peer is told the screen's
// size ("screen"), and the owner whether it may ask.

// Resize bounds: at most the configured resolution (what the job reserves
// CPU and memory for), at least this.
const (
	minScreenWidth  = 320
	minScreenHeight = 240
)

// resizeGap is the least time between two resizes: each restarts the
// capture and the encoder, so a player dragging its window's edge gets the
// size it stops at, not one per pixel.
const resizeGap = 300 * time.Millisecond

// screenMessage tells a peer the screen's size, and the owner whether it
// may ask for another.
type screenMessage struct {
	Type      string `json:"type"` // "screen"
	Width     int    `json:"width"`
	Height    int    `json:"height"`
	Resizable bool   `json:"resizable"`
	// Owner says the peer may give input (spectators' is refused).
	Owner bool `json:"owner"`
}

// resizable reports whether the screen follows the owner's window: not
// with -fixed-resolution, not on a display the streamer did not start
// (a real monitor's modes are not the player's to change), and not with
// the demo scene (drawn at the configured size for benchmarks).
func (c Config) resizable() bool {
	return !c.FixedResolution && c.Display == "" && !c.Demo
}

// fitSize is the screen size for a window of w x h device pixels: scaled
// down, keeping its shape, to fit maxW x maxH, at least the minimum, and
// even (the encoders' 4:2:0 chroma needs even sizes).
func fitSize(w, h, maxW, maxH int) (int, int) {
	if w > maxW || h > maxH {
		scale := min(float64(maxW)/float64(w), float64(maxH)/float64(h))
		w, h = int(float64(w)*scale), int(float64(h)*scale)
	}
	w = min(maxW, max(minScreenWidth, w)) &^ 1
	h = min(maxH, max(minScreenHeight, h)) &^ 1
	return w, h
}

// screenSize is the X screen's size now.
func (s *Server) screenSize() (w, h int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.width, s.height
}

// requestResize asks for the screen to fit a window of w x h; the latest
// request replaces one not yet applied.
func (s *Server) requestResize(w, h int) {
	w, h = fitSize(w, h, s.cfg.Width, s.cfg.Height)
	select {
	case <-s.resizeReq:
	default:
	}
	select {
	case s.resizeReq <- [2]int{w, h}:
	default: // another request just went in; it is as new as this one
	}
}

// screenFor is the screen message for p.
func (s *Server) screenFor(p *peer) []byte {
	w, h := s.screenSize()
	b, _ := json.Marshal(screenMessage{Type: "screen", Width: w, Height: h,
		Resizable: s.cfg.resizable() && p.role == token.RoleOwner, Owner: p.role == token.RoleOwner})
	return b
}

// launchVideo starts the capture and encoder at vp's size.
func (s *Server) launchVideo(b branch, vp videoParams) (*gst.Pipeline, error) {
	video, err := gst.Launch(videoPipeline(s.display, b, vp, s.showPointer),
		func(smp gst.Sample) {
			if s.ready.CompareAndSwap(false, true) {
				s.log.Info("first video frame encoded")
			}
			s.media.writeVideo(smp.Data, smp.PTS, smp.Duration, smp.Latency)
			if s.OnEncoded != nil && smp.Latency > 0 {
				s.OnEncoded(smp.Latency)
			}
		})
	if err != nil {
		return nil, fmt.Errorf("video pipeline: %w", err)
	}
	s.media.setEncoder(video)
	return video, nil
}

// screen is what runVideo needs from the display.
type screen interface {
	Resize(w, h int) error
	Size() (w, h int)
}

// runVideo runs the video pipeline until ctx ends or it fails, and applies
// resize requests in between: stop the capture, resize the screen, start
// the capture and encoder again at the new size and the current bitrate.
func (s *Server) runVideo(ctx context.Context, video *gst.Pipeline, b branch, vp videoParams, scr screen) error {
	defer func() {
		if video != nil {
			video.Stop()
		}
	}()
	var last time.Time
	for {
		wctx, stop := context.WithCancel(ctx)
		failed := make(chan error, 1)
		go func(pl *gst.Pipeline) { failed <- pl.Wait(wctx) }(video)
		var size [2]int
		select {
		case err := <-failed:
			stop()
			return err
		case <-ctx.Done():
			stop()
			<-failed
			return nil
		case size = <-s.resizeReq:
			stop()
			// An error the wait took off the bus as it was stopped is
			// still the pipeline's.
			if err := <-failed; err != nil {
				return err
			}
		}
		// The size asked for when the gap since the last resize is over.
		if wait := resizeGap - time.Since(last); wait > 0 {
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(wait):
			}
			select {
			case size = <-s.resizeReq:
			default:
			}
		}
		prevW, prevH := s.screenSize()
		if size == [2]int{prevW, prevH} {
			continue
		}
		last = time.Now()
		video.Stop()
		video = nil
		err := scr.Resize(size[0], size[1])
		// Whatever happened, the screen's size is what it is now: input
		// and pointer positions scale to it, the capture takes it.
		vp.Width, vp.Height = scr.Size()
		if err != nil {
			s.log.Warn("screen not resized", "asked", fmt.Sprintf("%dx%d", size[0], size[1]),
				"size", fmt.Sprintf("%dx%d", vp.Width, vp.Height), "err", err)
		}
		vp.Kbps = s.media.Bitrate()
		if video, err = s.launchVideo(b, vp); err != nil {
			// Not at this size: back to the one that ran.
			s.log.Warn("capture failed at the new size; back to the last", "size", fmt.Sprintf("%dx%d", vp.Width, vp.Height), "err", err)
			if rerr := scr.Resize(prevW, prevH); rerr != nil {
				return fmt.Errorf("%w (and back to %dx%d: %v)", err, prevW, prevH, rerr)
			}
			vp.Width, vp.Height = prevW, prevH
			if video, err = s.launchVideo(b, vp); err != nil {
				return err
			}
		}
		s.mu.Lock()
		s.width, s.height = vp.Width, vp.Height
		s.mu.Unlock()
		if vp.Width == size[0] && vp.Height == size[1] {
			s.log.Info("screen resized", "size", fmt.Sprintf("%dx%d", vp.Width, vp.Height), "took", time.Since(last).Round(time.Millisecond))
			s.metrics.resizes.Inc()
		}
		for _, p := range s.peersWhere(func(*peer) bool { return true }) {
			if dc := p.openInput(); dc != nil {
				_ = dc.SendText(string(s.screenFor(p)))
			}
		}
	}
}
