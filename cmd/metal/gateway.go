package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"time"

	consul "github.com/hashicorp/consul/api"
	nomad "github.com/hashicorp/nomad/api"
	"golang.org/x/sync/errgroup"

	"github.com/metal-stream/metal/gateway"
	"github.com/metal-stream/metal/internal/flagenv"
	"github.com/metal-stream/metal/jobs"
	"github.com/metal-stream/metal/scheduler"
)

func runGateway(ctx context.Context, log *slog.Logger, args []string) error {
	cfg := gateway.DefaultConfig()
	sc := scheduler.DefaultConfig()
	fs := flag.NewFlagSet("gateway", flag.ContinueOnError)
	fs.StringVar(&cfg.Listen, "listen", cfg.Listen, "HTTP listen address")
	fs.StringVar(&cfg.PublicURL, "public-url", cfg.PublicURL, "gateway URL as players reach it (derived from -listen when empty)")
	fs.BoolVar(&cfg.OpenMode, "open", cfg.OpenMode, "let anyone start a session without a player link (local development only)")
	fs.StringVar(&cfg.AdminToken, "admin-token", cfg.AdminToken, "bearer token for the admin API (empty disables it)")
	key := fs.String("key", "", "secret (at least 32 bytes) that signs player links and derives session-token keys")
	fs.DurationVar(&cfg.TokenTTL, "token-ttl", cfg.TokenTTL, "lifetime of the single-use streamer token the gateway mints per forwarded WHEP request")
	fs.StringVar(&cfg.TLSCert, "tls-cert", cfg.TLSCert, "serve HTTPS with this certificate (PEM); needs -tls-key")
	fs.StringVar(&cfg.TLSKey, "tls-key", cfg.TLSKey, "private key (PEM) of -tls-cert")
	fs.BoolVar(&cfg.TrustProxy, "trust-proxy", cfg.TrustProxy, "take client addresses from X-Forwarded-For (only behind a proxy that sets it)")
	fs.Float64Var(&cfg.RatePerSecond, "rate", cfg.RatePerSecond, "session and page requests per second per client address")
	fs.IntVar(&cfg.Burst, "burst", cfg.Burst, "burst of requests per client address")
	capacity := fs.String("capacity", "auto", "optional bound on sessions per edge: a number, or auto (no bound: as many as Nomad can place)")
	fs.IntVar(&sc.QueueBound, "queue", sc.QueueBound, "sessions that may wait beyond capacity; more get 429")
	dcs := fs.String("datacenter", sc.Datacenter, "edge datacenters to place streams in, comma-separated, the default first")
	fs.StringVar(&sc.Failover, "failover", sc.Failover, "when an edge fails a player: auto (place on the next-nearest edge at once) or click (the player asks)")
	fs.DurationVar(&sc.ReapAfter, "reap-after", sc.ReapAfter, "stop a session no browser has asked about for this long (0: never)")
	driver := fs.String("streamer-driver", "docker", "task driver for streamer jobs: docker or raw_exec")
	binary := fs.String("streamer-binary", "/usr/local/bin/metal", "metal binary on clients (raw_exec)")
	image := fs.String("streamer-image", "ghcr.io/metal-stream/metal-desktop:latest", "streamer image (docker)")
	gpu := fs.Bool("gpu", true, "streams require an NVIDIA GPU with NVENC")
	loopback := fs.Bool("streamer-loopback", false, "streamers offer 127.0.0.1 candidates (development)")
	iceIfaces := fs.String("streamer-ice-interfaces", "", "comma-separated interfaces streamers gather ICE candidates on (empty: all; metal dev: lo)")
	demo := fs.Bool("streamer-demo", false, "streamers draw the demo scene")
	desktop := fs.String("streamer-desktop", "", "shell command each streamer starts on its display, the session's desktop (the job's desktop variable; empty: none with raw_exec, the image's Openbox and xterm with docker)")
	encoder := fs.String("streamer-encoder", "", "streamers' encoder; empty runs nvenc with -gpu, x264enc without (the job's encoder variable)")
	resolution := fs.String("resolution", "1280x720", "stream resolution: 1280x720 or 1920x1080; the screen follows the player's window up to it")
	gamepad := fs.String("streamer-gamepad", "auto", "the player's gamepads in sessions (the job's gamepad variable): auto, uinput, keys or off")
	fixedRes := fs.Bool("streamer-fixed-resolution", false, "streamers keep the screen at -resolution instead of following the player's window (the job's fixed_resolution variable)")
	fps := fs.Int("fps", 60, "stream frame rate: 30 or 60")
	cpu := fs.Int("streamer-cpu", 0, "CPU (MHz) each streamer reserves; 0 takes the job's table for the resolution and fps")
	memory := fs.Int("streamer-memory", 0, "memory (MiB) each streamer reserves; 0 takes the job's table")
	idle := fs.Duration("streamer-idle-timeout", 2*time.Minute, "a streamer with no browser for this long exits")
	turnSecret := fs.String("turn-secret", "", "TURN REST shared secret of the edges' relays (empty: no TURN servers handed out)")
	turnTTL := fs.Duration("turn-ttl", 10*time.Minute, "lifetime of the TURN credentials handed to a browser")
	sessionNS := fs.String("session-namespace", "", "Nomad namespace of session jobs and their keys (empty: the client's, NOMAD_NAMESPACE); its own namespace keeps a gateway token that may submit session jobs away from the gateway and TURN jobs")
	fs.DurationVar(&sc.SweepEvery, "sweep-every", sc.SweepEvery, "how often the leader reconciles Nomad's session jobs with the session records")
	teardown := fs.Bool("teardown-on-stop", true, "when this gateway's own Nomad job (NOMAD_JOB_ID) is stopped for good (terraform destroy, nomad job stop; not a restart or an update), purge every session job and key before exiting, so the session namespace can be deleted")
	fs.StringVar(&sc.Instance, "instance", os.Getenv("NOMAD_ALLOC_ID"), "this gateway's name among its peers (leader lock, lock check); empty: host name and process id")
	flagenv.Usage(fs, "metal gateway [flags]  (Nomad and Consul from NOMAD_ADDR, CONSUL_HTTP_ADDR and their token variables)")
	if err := flagenv.Parse(fs, args); err != nil {
		return err
	}
	if list := splitList(*dcs); len(list) > 0 {
		sc.Datacenter, sc.Datacenters = list[0], list
	} else {
		return fmt.Errorf("-datacenter: name at least one edge")
	}
	switch *encoder {
	case "", "nvenc", "nvcudah264enc", "nvh264enc", "x264enc", "vp8enc": // jobs/streamer.nomad.hcl validates the same
	default:
		return fmt.Errorf("-streamer-encoder %q: want empty, nvenc, nvcudah264enc, nvh264enc, x264enc or vp8enc", *encoder)
	}
	if sc.Failover != "auto" && sc.Failover != "click" {
		return fmt.Errorf("-failover %q: want auto or click", sc.Failover)
	}
	if *capacity == "auto" {
		sc.Capacity = 0
	} else if n, err := strconv.Atoi(*capacity); err == nil && n > 0 {
		sc.Capacity = n
	} else {
		return fmt.Errorf("-capacity %q: want a positive number or auto", *capacity)
	}
	if len(*key) < 32 {
		return fmt.Errorf("-key (METAL_KEY): %d bytes, want at least 32", len(*key))
	}
	cfg.LinkKey = []byte(*key)
	sc.MasterKey = []byte(*key)
	hcl, err := jobs.Read("streamer.nomad.hcl")
	if err != nil {
		return err
	}
	sc.JobHCL = hcl
	sc.JobVars = map[string]any{
		"driver": *driver, "metal_binary": *binary, "image": *image, "gpu": *gpu, "loopback": *loopback, "ice_interfaces": *iceIfaces,
		"demo": *demo, "resolution": *resolution, "fps": *fps, "idle_timeout": idle.String(),
		"cpu": *cpu, "memory": *memory, "encoder": *encoder, "desktop": *desktop, "fixed_resolution": *fixedRes, "gamepad": *gamepad,
	}

	ncfg := nomad.DefaultConfig()
	if *sessionNS != "" {
		ncfg.Namespace = *sessionNS
	}
	sc.Namespace = ncfg.Namespace
	nc, err := nomad.NewClient(ncfg)
	if err != nil {
		return fmt.Errorf("nomad client: %w", err)
	}
	cc, err := consul.NewClient(consul.DefaultConfig())
	if err != nil {
		return fmt.Errorf("consul client: %w", err)
	}
	sched, err := scheduler.New(sc, nc, cc, log)
	if err != nil {
		return err
	}
	var turnProvider gateway.TURNProvider
	if *turnSecret != "" {
		ct := &gateway.ConsulTURN{Health: cc.Health(), Secret: *turnSecret, TTL: *turnTTL}
		if err := ct.Validate(); err != nil {
			return err
		}
		turnProvider = ct
	}
	srv, err := gateway.New(cfg, log, gateway.Deps{
		TURN:       turnProvider,
		Placer:     sched,
		Players:    &gateway.ConsulPlayers{KV: cc.KV(), Prefix: "metal/players/"},
		Shares:     &gateway.ConsulShares{KV: cc.KV(), Prefix: "metal/shares/"},
		Collectors: sched.Collectors(),
		Checks: map[string]gateway.Checker{
			"nomad": gateway.CheckerFunc(func(ctx context.Context) error {
				_, err := nc.Status().Leader()
				return err
			}),
			"consul": gateway.CheckerFunc(func(ctx context.Context) error {
				_, err := cc.Status().LeaderWithQueryOptions((&consul.QueryOptions{}).WithContext(ctx))
				return err
			}),
		},
	})
	if err != nil {
		return err
	}
	if err := srv.Listen(); err != nil {
		return err
	}
	// Nomad signals the task after it has stored the job as stopped, so
	// the job, read as soon as the signal comes (in parallel with the
	// shutdown), says which shutdown this is.
	job := os.Getenv("NOMAD_JOB_ID")
	stopped := make(chan bool, 1)
	if *teardown && job != "" {
		go func() {
			<-ctx.Done()
			qctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			stopped <- jobStopped(qctx, log, nc, job, os.Getenv("NOMAD_NAMESPACE"))
		}()
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return sched.Run(gctx) })
	g.Go(func() error { return srv.Run(gctx) })
	err = g.Wait()
	if *teardown && job != "" && ctx.Err() != nil && <-stopped {
		// Within the job's 30 s kill_timeout: the shutdown above takes at
		// most 10 s.
		tctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		n, terr := sched.Teardown(tctx)
		if terr != nil {
			log.Error("teardown: sessions left behind", "job", job, "removed", n, "err", terr)
		} else {
			log.Info("teardown: job stopped, every session job and key purged", "job", job, "removed", n)
		}
	}
	return err
}

// jobStopped reports whether the gateway's own job is stopped or gone; a
// restart, a rescheduled allocation or a job update leaves it running, and
// its sessions to the gateways that follow. When Nomad cannot tell, the
// sessions stay.
func jobStopped(ctx context.Context, log *slog.Logger, nc *nomad.Client, job, namespace string) bool {
	j, _, err := nc.Jobs().Info(job, (&nomad.QueryOptions{Namespace: namespace}).WithContext(ctx))
	var ue nomad.UnexpectedResponseError
	switch {
	case err != nil && errors.As(err, &ue) && ue.StatusCode() == 404:
		return true
	case err != nil:
		log.Warn("teardown: cannot tell whether the job is stopped; sessions left running", "job", job, "err", err)
		return false
	}
	return j.Stop != nil && *j.Stop
}
