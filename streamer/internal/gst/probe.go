package gst

import (
	"context"
	"fmt"
	"time"
)

// Probe runs desc (a short test pipeline ending in an appsink named sink)
// until it produces one sample, fails, or timeout passes. It is how NVENC is
// detected: the nvcodec plugin can register nvh264enc and still fail to open
// an encoder session (no libcuda, or a GPU without NVENC such as H100).
func Probe(desc string, timeout time.Duration) error {
	got := make(chan struct{}, 1)
	pl, err := Launch(desc, func(Sample) {
		select {
		case got <- struct{}{}:
		default:
		}
	})
	if err != nil {
		return err
	}
	defer pl.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- pl.Wait(ctx) }()
	select {
	case <-got:
		cancel()
		<-errc
		return nil
	case err := <-errc:
		if err == nil {
			err = fmt.Errorf("no sample within %s", timeout)
		}
		return err
	}
}
