package main

import (
	"context"
	"errors"
	"log/slog"
)

func runStreamer(context.Context, *slog.Logger, []string) error {
	return errors.New("not built yet: the streamer lands with issue #3")
}
