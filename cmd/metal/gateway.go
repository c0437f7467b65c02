package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"

	consul "github.com/hashicorp/consul/api"
	nomad "github.com/hashicorp/nomad/api"

	"github.com/metal-stream/metal/gateway"
	"github.com/metal-stream/metal/internal/flagenv"
)

func runGateway(ctx context.Context, log *slog.Logger, args []string) error {
	cfg := gateway.DefaultConfig()
	fs := flag.NewFlagSet("gateway", flag.ContinueOnError)
	fs.StringVar(&cfg.Listen, "listen", cfg.Listen, "HTTP listen address")
	fs.StringVar(&cfg.PublicURL, "public-url", cfg.PublicURL, "gateway URL as players reach it (derived from -listen when empty)")
	fs.BoolVar(&cfg.OpenMode, "open", cfg.OpenMode, "let anyone start a session without a player link (local development only)")
	flagenv.Usage(fs, "metal gateway [flags]  (Nomad and Consul from NOMAD_ADDR, CONSUL_HTTP_ADDR and their token variables)")
	if err := flagenv.Parse(fs, args); err != nil {
		return err
	}
	nc, err := nomad.NewClient(nomad.DefaultConfig())
	if err != nil {
		return fmt.Errorf("nomad client: %w", err)
	}
	cc, err := consul.NewClient(consul.DefaultConfig())
	if err != nil {
		return fmt.Errorf("consul client: %w", err)
	}
	checks := map[string]gateway.Checker{
		"nomad": gateway.CheckerFunc(func(ctx context.Context) error {
			_, err := nc.Status().Leader()
			return err
		}),
		"consul": gateway.CheckerFunc(func(ctx context.Context) error {
			_, err := cc.Status().LeaderWithQueryOptions((&consul.QueryOptions{}).WithContext(ctx))
			return err
		}),
	}
	srv, err := gateway.New(cfg, log, checks)
	if err != nil {
		return err
	}
	if err := srv.Listen(); err != nil {
		return err
	}
	return srv.Run(ctx)
}
