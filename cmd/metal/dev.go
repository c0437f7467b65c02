package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	nomad "github.com/hashicorp/nomad/api"

	"github.com/metal-stream/metal/internal/flagenv"
	"github.com/metal-stream/metal/internal/localcluster"
	"github.com/metal-stream/metal/jobs"
)

// runDev starts real Consul and Nomad agents on loopback, registers Metal's
// jobs, prints the player URL and, on Ctrl-C, purges the jobs and stops the
// agents it started.
func runDev(ctx context.Context, log *slog.Logger, args []string) error {
	fs := flag.NewFlagSet("dev", flag.ContinueOnError)
	dir := fs.String("dir", "", "directory for agent configs, data and logs (a temporary one, removed on exit, when empty)")
	nomadBin := fs.String("nomad-bin", "", "nomad binary (default: bin/nomad, then $PATH)")
	consulBin := fs.String("consul-bin", "", "consul binary (default: bin/consul, then $PATH)")
	port := fs.Int("gateway-port", 8080, "gateway HTTP port on 127.0.0.1 (0 picks a free one)")
	capacity := fs.String("capacity", strconv.Itoa(devPlayers), "streams placed at once (the browsers decode on this machine too); auto: as many as Nomad can place")
	fps := fs.Int("fps", 30, "stream frame rate: 30 or 60 (60 needs twice the CPU per player)")
	queue := fs.Int("queue", 10, "sessions that may wait beyond capacity")
	gateways := fs.Int("gateways", 1, "gateway instances (the job's count); more than one puts a local load balancer on the gateway port")
	driver := fs.String("driver", "raw_exec", "task driver: raw_exec (this metal binary) or docker (the metal and metal-desktop images, `make images`)")
	tag := fs.String("image-tag", "dev", "tag of the metal and metal-desktop images (-driver docker)")
	desktop := fs.String("desktop", "openbox --startup xterm", "the session's desktop with raw_exec: a shell command started on the streamer's display (Debian's openbox and xterm, tools/deps.sh); empty: the moving demo scene (benchmarks)")
	flagenv.Usage(fs, "metal dev [flags]")
	if err := flagenv.Parse(fs, args); err != nil {
		return err
	}
	if *fps != 30 && *fps != 60 {
		return fmt.Errorf("-fps %d: want 30 or 60", *fps)
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find metal binary: %w", err)
	}
	if *gateways < 1 || *gateways > 5 {
		return fmt.Errorf("-gateways %d: want 1 to 5", *gateways)
	}
	metalImage, desktopImage := "metal:"+*tag, "metal-desktop:"+*tag
	switch *driver {
	case "raw_exec":
	case "docker":
		if *tag == "latest" {
			return fmt.Errorf("-image-tag latest: Nomad pulls a latest tag on every start, and no registry has these images; build and name another (make images)")
		}
		for _, img := range []string{metalImage, desktopImage} {
			if err := exec.CommandContext(ctx, "docker", "image", "inspect", img).Run(); err != nil {
				return fmt.Errorf("-driver docker: image %s not in the local Docker engine (make images): %w", img, err)
			}
		}
	default:
		return fmt.Errorf("-driver %q: want raw_exec or docker", *driver)
	}
	var front net.Listener // the load balancer's, with several gateways
	if *port != 0 || *gateways > 1 {
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", *port))
		if err != nil {
			return fmt.Errorf("gateway port %d is taken (%v): pass -gateway-port 0 (METAL_GATEWAY_PORT=0) for any free port", *port, err)
		}
		if *gateways > 1 {
			front = l
			defer front.Close()
		} else {
			l.Close()
		}
	}

	step := func(format string, a ...any) { fmt.Fprintf(os.Stderr, "==> "+format+"\n", a...) }
	step("starting Consul and Nomad on 127.0.0.1")
	startCtx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	cluster, err := localcluster.Start(startCtx, localcluster.Options{
		Dir: *dir, NomadBin: *nomadBin, ConsulBin: *consulBin, Logger: log, Docker: *driver == "docker",
	})
	cancel()
	if err != nil {
		return err
	}
	// From here on, everything started is stopped on the way out, even when
	// ctx is already cancelled.
	defer func() {
		step("stopping: purging jobs, then Nomad (pid %d) and Consul (pid %d)", cluster.PIDs()[1], cluster.PIDs()[0])
		stopCtx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if err := cluster.Stop(stopCtx); err != nil {
			log.Error("stop local cluster", "err", err)
			return
		}
		step("stopped; nothing left running")
	}()
	step("Consul %s, Nomad %s (logs in %s)", cluster.ConsulAddr, cluster.NomadAddr, cluster.Dir)

	hcl, err := jobs.Read("gateway.nomad.hcl")
	if err != nil {
		return err
	}
	key, adminToken, turnSecret := randomHex(32), randomHex(16), randomHex(32)
	for path, items := range map[string]nomad.VariableItems{
		"nomad/jobs/metal-gateway": {"key": key, "admin_token": adminToken, "turn_secret": turnSecret},
		"nomad/jobs/metal-turn":    {"secret": turnSecret},
	} {
		if _, _, err := cluster.Nomad.Variables().Create(&nomad.Variable{Path: path, Items: items}, nil); err != nil {
			return fmt.Errorf("write secrets %s: %w", path, err)
		}
	}
	turnHCL, err := jobs.Read("turn.nomad.hcl")
	if err != nil {
		return err
	}
	ports, err := localcluster.FreePorts(2)
	if err != nil {
		return err
	}
	turnPort, healthPort := ports[0], ports[1]
	step("registering job metal-turn (%s, 127.0.0.1:%d)", *driver, turnPort)
	if _, err := localcluster.RunJob(ctx, cluster.Nomad, turnHCL, map[string]any{
		"driver": *driver, "metal_binary": self, "image": metalImage, "relay_ip": "127.0.0.1", "bind": "127.0.0.1",
		"port": turnPort, "health_port": healthPort,
		// Everything here is on 127.0.0.1: a browser told to relay must be
		// relayed to a streamer on this machine.
		"allow_local_peers": true,
	}); err != nil {
		return err
	}
	streamerCPU, err := devStreamerCPU(ctx, cluster.Nomad, *fps, *gateways)
	if err != nil {
		return err
	}
	gatewayPort := *port
	if *gateways > 1 {
		gatewayPort = 0 // several on one node: dynamic ports, the balancer in front
	}
	// Streamers offer loopback candidates only: a docker streamer shares
	// the host's network, and nothing `metal dev` runs is meant to be
	// reached from beyond this machine.
	streamerArgs := []string{"-gpu=false", "-streamer-loopback", "-streamer-ice-interfaces", "lo", "-resolution", "1280x720", "-fps", strconv.Itoa(*fps),
		"-streamer-cpu", strconv.Itoa(streamerCPU)}
	var what string
	switch {
	case *driver == "docker":
		// The image's desktop (Openbox and an xterm), not the demo.
		streamerArgs = append(streamerArgs, "-streamer-image", desktopImage)
		what = "the desktop of " + desktopImage
	case *desktop != "":
		// A real desktop from this machine's packages, as the image has.
		streamerArgs = append(streamerArgs, "-streamer-desktop", *desktop)
		what = "desktop " + strconv.Quote(*desktop)
	default:
		streamerArgs = append(streamerArgs, "-streamer-demo")
		what = "the demo scene"
	}
	step("registering job metal-gateway (%s, %d instance(s), open mode, capacity %s, queue %d, 720p%d, %d MHz per stream, %s)", *driver, *gateways, *capacity, *queue, *fps, streamerCPU, what)
	if _, err := localcluster.RunJob(ctx, cluster.Nomad, hcl, map[string]any{
		"count":           *gateways,
		"driver":          *driver,
		"metal_binary":    self,
		"image":           metalImage,
		"nomad_addr":      cluster.NomadAddr,
		"consul_addr":     cluster.ConsulAddr,
		"open_mode":       true,
		"port":            gatewayPort,
		"capacity":        *capacity,
		"queue":           *queue,
		"streamer_driver": *driver,
		"streamer_args":   streamerArgs,
	}); err != nil {
		return err
	}
	waitCtx, cancel := context.WithTimeout(ctx, 90*time.Second)
	entries, err := localcluster.WaitService(waitCtx, cluster.Consul, "metal-gateway")
	if err == nil {
		// The relay too: a page opened before it answers measures no edge.
		_, err = localcluster.WaitService(waitCtx, cluster.Consul, "metal-turn")
		if err != nil {
			err = fmt.Errorf("TURN did not become healthy in Consul: %w", err)
		}
	} else {
		err = fmt.Errorf("gateway did not become healthy in Consul: %w", err)
	}
	cancel()
	if err != nil {
		return err
	}
	svc := entries[0].Service
	url := fmt.Sprintf("http://%s:%d/", svc.Address, svc.Port)
	if front != nil {
		p := &devProxy{log: log}
		go p.follow(ctx, cluster.Consul.Health())
		go func() {
			if err := p.serve(ctx, front); err != nil {
				log.Error("load balancer", "err", err)
			}
		}()
		url = fmt.Sprintf("http://%s/", front.Addr())
		step("%d gateways behind a local load balancer at %s (one leads; kill any, players keep playing)", *gateways, url)
	}
	step("Metal is running. Player URL (open mode: anyone on this machine may play):")
	fmt.Println(url)
	step("issue a player link: %s player add alice -gateway %s -admin-token %s", self, strings.TrimSuffix(url, "/"), adminToken)
	step("Ctrl-C stops everything")
	<-ctx.Done()
	return nil
}

// devPlayers is how many players `metal dev` makes room for at once.
const devPlayers = 2

// devStreamerCPU is the CPU each dev streamer reserves: the job's measured
// reservation (jobs/streamer.nomad.hcl: 1000 MHz at 720p30, 1600 at 60),
// lowered where needed so that devPlayers streams fit on this machine next
// to the gateways (200 each) and TURN (500). Nomad's CPU is a share, not a cap:
// on a slower 2-core machine the two streams share what there is.
func devStreamerCPU(ctx context.Context, nc *nomad.Client, fps, gateways int) (int, error) {
	want := 1000
	if fps == 60 {
		want = 1600
	}
	nodes, _, err := nc.Nodes().List((&nomad.QueryOptions{}).WithContext(ctx))
	if err != nil || len(nodes) == 0 {
		return 0, fmt.Errorf("read the dev node: %v", err)
	}
	node, _, err := nc.Nodes().Info(nodes[0].ID, (&nomad.QueryOptions{}).WithContext(ctx))
	if err != nil || node.NodeResources == nil {
		return 0, fmt.Errorf("read the dev node: %v", err)
	}
	free := int(node.NodeResources.Cpu.CpuShares) - 200*gateways - 500
	if node.ReservedResources != nil {
		free -= int(node.ReservedResources.Cpu.CpuShares)
	}
	return max(100, min(want, free/devPlayers)), nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
