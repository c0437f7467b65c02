package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
)

type command struct {
	name, summary string
	run           func(ctx context.Context, log *slog.Logger, args []string) error
}

func commands() []command {
	return []command{
		{"gateway", "serve player links, admission and the player page", runGateway},
		{"streamer", "stream a desktop to browsers over WebRTC (WHEP)", runStreamer},
		{"turn", "run the TURN relay for one edge", runTURN},
		{"dev", "run Metal locally on real Consul and Nomad agents", runDev},
		{"player", "issue, list and revoke player links (admin API)", runPlayer},
		{"health", "GET a health URL and exit 0 on 2xx (the images' HEALTHCHECK)", runHealth},
		{"version", "print the version", runVersion},
	}
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "Usage: metal <command> [flags]\n\nCommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-9s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nRun `metal <command> -h` for a command's flags. Logging: METAL_LOG_LEVEL (debug, info, warn, error), METAL_LOG_FORMAT (text, json).")
}

func run(ctx context.Context, args []string) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(os.Stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	log := newLogger(os.Stderr)
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		err := c.run(ctx, log, args[1:])
		switch {
		case err == nil:
			return 0
		case errors.Is(err, flag.ErrHelp):
			return 0
		default:
			fmt.Fprintf(os.Stderr, "metal %s: %v\n", c.name, err)
			return 1
		}
	}
	fmt.Fprintf(os.Stderr, "metal: unknown command %q\n\n", args[0])
	usage(os.Stderr)
	return 2
}

func newLogger(w io.Writer) *slog.Logger {
	var level slog.Level
	if err := level.UnmarshalText([]byte(os.Getenv("METAL_LOG_LEVEL"))); err != nil {
		level = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: level}
	if strings.EqualFold(os.Getenv("METAL_LOG_FORMAT"), "json") {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// splitList splits a comma-separated flag value, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}
