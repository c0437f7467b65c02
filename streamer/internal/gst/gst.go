// Package gst is the only place Metal touches GStreamer (through go-gst and
// cgo). It builds capture-and-encode pipelines that end in an appsink and
// hands encoded samples to a Go callback; everything else in the streamer
// sees only the Pipeline methods below.
package gst

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/go-gst/go-gst/gst"
	"github.com/go-gst/go-gst/gst/app"
)

var initOnce sync.Once

// Init initialises GStreamer once per process.
func Init() { initOnce.Do(func() { gst.Init(nil) }) }

// HasElement reports whether an element factory is registered.
func HasElement(name string) bool {
	Init()
	return gst.Find(name) != nil
}

// Sample is one encoded access unit (video) or packet (audio).
type Sample struct {
	Data     []byte
	Duration time.Duration
	// Latency is the time from capture (the buffer's running-time stamp) to
	// the moment the encoded sample reached the appsink.
	Latency time.Duration
	// PTS is the frame's timestamp as it entered the encoder (running
	// time), -1 when unknown: frames dropped before the encoder leave gaps.
	PTS time.Duration
}

// Pipeline is a running GStreamer pipeline ending in an appsink named "sink".
type Pipeline struct {
	p        *gst.Pipeline
	encoder  *gst.Element
	bitrate  func(kbps int) string // property value for the encoder's bitrate
	bitProp  string
	onSample func(Sample)
	stopOnce sync.Once

	// inPTS holds the capture timestamps of frames that entered the encoder
	// and have not come out yet. Encoders may shift output timestamps (x264enc
	// adds 1000 hours), so latency pairs frames in order instead: no B-frames
	// means one out for each in.
	mu    sync.Mutex
	inPTS []gst.ClockTime
}

// Launch parses desc (gst-launch syntax) and starts it. With onSample set,
// desc must contain an appsink named "sink"; it may name its encoder "enc".
func Launch(desc string, onSample func(Sample)) (*Pipeline, error) {
	Init()
	p, err := gst.NewPipelineFromString(desc)
	if err != nil {
		return nil, fmt.Errorf("parse pipeline: %w", err)
	}
	pl := &Pipeline{p: p, onSample: onSample}
	if enc, err := p.GetElementByName("enc"); err == nil {
		pl.encoder = enc
		if pad := enc.GetStaticPad("sink"); pad != nil {
			pad.AddProbe(gst.PadProbeTypeBuffer, func(_ *gst.Pad, info *gst.PadProbeInfo) gst.PadProbeReturn {
				if buf := info.GetBuffer(); buf != nil {
					pl.mu.Lock()
					if len(pl.inPTS) >= 64 {
						pl.inPTS = pl.inPTS[1:]
					}
					pl.inPTS = append(pl.inPTS, buf.PresentationTimestamp())
					pl.mu.Unlock()
				}
				return gst.PadProbeOK
			})
		}
	}
	if onSample != nil {
		sinkEl, err := p.GetElementByName("sink")
		if err != nil {
			return nil, fmt.Errorf("pipeline has no appsink named sink: %w", err)
		}
		sink := app.SinkFromElement(sinkEl)
		sink.SetCallbacks(&app.SinkCallbacks{NewSampleFunc: pl.newSample})
	}
	if err := p.SetState(gst.StatePlaying); err != nil {
		_ = p.SetState(gst.StateNull)
		return nil, fmt.Errorf("start pipeline: %w", err)
	}
	return pl, nil
}

func (pl *Pipeline) newSample(sink *app.Sink) gst.FlowReturn {
	s := sink.PullSample()
	if s == nil {
		return gst.FlowEOS
	}
	buf := s.GetBuffer()
	if buf == nil {
		return gst.FlowOK
	}
	out := Sample{Data: buf.Bytes(), Duration: durationOf(buf.Duration()), PTS: -1}
	pts := gst.ClockTimeNone
	pl.mu.Lock()
	if len(pl.inPTS) > 0 {
		pts, pl.inPTS = pl.inPTS[0], pl.inPTS[1:]
	}
	pl.mu.Unlock()
	if pts != gst.ClockTimeNone {
		out.PTS = time.Duration(pts)
		if clock := pl.p.GetPipelineClock(); clock != nil {
			running := int64(clock.GetTime()) - int64(pl.p.GetBaseTime())
			if d := running - int64(pts); d >= 0 {
				out.Latency = time.Duration(d)
			}
		}
	}
	pl.onSample(out)
	return gst.FlowOK
}

func durationOf(c gst.ClockTime) time.Duration {
	if c == gst.ClockTimeNone {
		return 0
	}
	return time.Duration(c)
}

// Wait blocks until the pipeline fails, reaches end of stream, or ctx ends.
func (pl *Pipeline) Wait(ctx context.Context) error {
	bus := pl.p.GetPipelineBus()
	for ctx.Err() == nil {
		msg := bus.TimedPopFiltered(gst.ClockTime(200*time.Millisecond), gst.MessageError|gst.MessageEOS)
		if msg == nil {
			continue
		}
		switch msg.Type() {
		case gst.MessageEOS:
			return errors.New("pipeline: end of stream")
		case gst.MessageError:
			gerr := msg.ParseError()
			return fmt.Errorf("pipeline: %s (%s)", gerr.Error(), gerr.DebugString())
		}
	}
	return nil
}

// Stop sets the pipeline to NULL, releasing the display and the encoder.
func (pl *Pipeline) Stop() {
	pl.stopOnce.Do(func() { _ = pl.p.BlockSetState(gst.StateNull) })
}

// ForceKeyframe asks the encoder for a key frame with SPS/PPS.
func (pl *Pipeline) ForceKeyframe() {
	if pl.encoder == nil {
		return
	}
	st := gst.NewStructureFromString("GstForceKeyUnit, all-headers=(boolean)true")
	pl.encoder.SendEvent(gst.NewCustomEvent(gst.EventTypeCustomDownstream, st))
}

// SetProperty sets an encoder property from its string form at run time.
func (pl *Pipeline) SetProperty(name, value string) {
	if pl.encoder != nil {
		pl.encoder.SetArg(name, value)
	}
}
