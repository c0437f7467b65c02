package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/metal-stream/metal/internal/flagenv"
)

// runHealth is the container images' HEALTHCHECK: one GET, success on a
// 2xx answer, so the images need no curl.
func runHealth(ctx context.Context, _ *slog.Logger, args []string) error {
	fs := flag.NewFlagSet("health", flag.ContinueOnError)
	url := fs.String("health-url", "http://127.0.0.1:8080/readyz", "URL to GET; healthy on a 2xx answer")
	timeout := fs.Duration("timeout", 5*time.Second, "how long to wait for the answer (the gateway's /readyz itself checks Nomad and Consul within 3 s)")
	flagenv.Usage(fs, "metal health [flags]")
	if err := flagenv.Parse(fs, args); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, *url, nil)
	if err != nil {
		return fmt.Errorf("health %s: %w", *url, err)
	}
	// Never through a proxy: the URL is this node's own listener.
	client := &http.Client{Transport: &http.Transport{Proxy: nil}}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("health %s: %w", *url, err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("health %s: %s", *url, resp.Status)
	}
	return nil
}
