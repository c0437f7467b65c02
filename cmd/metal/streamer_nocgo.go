//go:build !cgo

package main

import (
	"context"
	"errors"
	"log/slog"
)

// A CGO_ENABLED=0 build (a static gateway or TURN image) has no GStreamer.
func runStreamer(context.Context, *slog.Logger, []string) error {
	return errors.New("this metal binary was built with CGO_ENABLED=0; the streamer needs cgo and GStreamer 1.22")
}
