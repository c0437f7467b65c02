package main

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/metal-stream/metal/internal/version"
)

func runVersion(_ context.Context, _ *slog.Logger, _ []string) error {
	fmt.Println("metal", version.String())
	return nil
}
