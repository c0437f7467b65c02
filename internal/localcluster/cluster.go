package localcluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	consul "github.com/hashicorp/consul/api"
	nomad "github.com/hashicorp/nomad/api"
)

const defaultGrace = 15 * time.Second

// Options configure a local cluster. The zero value is usable.
type Options struct {
	// Dir holds configs, data and logs. Empty means a new temporary
	// directory, removed by Stop.
	Dir string
	// Datacenter for both agents; "dc1" when empty.
	Datacenter string
	// NomadBin and ConsulBin are the agent binaries; found with FindBinary
	// when empty.
	NomadBin, ConsulBin string
	// NomadClientHCL is added inside Nomad's client block (options, meta,
	// reserved ports); NomadHCL at the top level (plugin blocks).
	NomadClientHCL, NomadHCL string
	// ACL enables Nomad's ACL system and bootstraps it; the management
	// token is Cluster.NomadToken and the Nomad client uses it.
	ACL bool
	// ConsulACLToken turns Consul's ACLs on (default deny) with this
	// management token (a UUID), which the Consul client and Nomad use.
	ConsulACLToken string
	// PluginDir is Nomad's plugin_dir (Metal's metal-nvidia device plugin).
	PluginDir string
	// Docker configures Nomad's docker driver for images that exist only
	// in the local engine (no registry: images are never garbage
	// collected) and makes Start wait until the driver is healthy.
	Docker bool
	// MinDevices makes Start wait until the node reports at least this many
	// device instances (fingerprinted by a device plugin).
	MinDevices int
	// DynamicPorts, when set, shrinks the client's dynamic port range to
	// this many ports (a node that runs out of ports, which Nomad refuses
	// to place on while CPU and memory would fit).
	DynamicPorts int
	// Logger receives progress; slog.Default() when nil.
	Logger *slog.Logger

	// The fields below build multi-site test topologies in network
	// namespaces the test creates; their zero values give the single
	// loopback agent pair.

	// Netns runs both agents in this network namespace (ip netns exec), on
	// the agents' default ports.
	Netns string
	// Container runs both agents inside this running container (docker
	// exec), a host of their own on a Docker network, on the agents'
	// default ports. Dir and the agent binaries must be mounted in it at
	// the same paths. docker kill of the container is the node's loss.
	Container string
	// WellKnownPorts puts the agents on their default ports (4646-4648,
	// 8300-8301, 8500) on BindIP: an address of the test's own, such as
	// the gateway of a Docker network whose containers join these agents.
	WellKnownPorts bool
	// BindIP is where the agents listen and advertise (default 127.0.0.1).
	BindIP string
	// NetworkInterface is the Nomad client's (default "lo").
	NetworkInterface string
	// NodeName names both agents' node (default "metal-local").
	NodeName string
	// ConsulDatacenter is Consul's datacenter (default "dc1"); Datacenter
	// is Nomad's (an edge).
	ConsulDatacenter string
	// ConsulJoin makes Consul a client agent joining these servers.
	ConsulJoin []string
	// NomadRole is "" (server and client), "server" or "client".
	NomadRole string
	// NomadServers are the servers a client-only Nomad joins (host:rpcport).
	NomadServers []string
	// ClientMeta is the Nomad client's node meta.
	ClientMeta map[string]string
	// HeartbeatTTL sets a Nomad server's min_heartbeat_ttl and
	// heartbeat_grace: a client that stops heartbeating is down after
	// about twice this (Nomad's defaults: 10 s each).
	HeartbeatTTL time.Duration
}

// Cluster is a running Consul server and Nomad server+client on loopback.
type Cluster struct {
	// ConsulAddr and NomadAddr are the agents' HTTP API addresses
	// (http://127.0.0.1:port).
	ConsulAddr, NomadAddr string
	// NomadToken is the bootstrap management token when Options.ACL is set.
	NomadToken string
	// Dir holds configs, data and logs of both agents.
	Dir string

	Nomad  *nomad.Client
	Consul *consul.Client

	consul, nomad *process
	removeDir     bool
	log           *slog.Logger
}

// Start starts Consul, waits for its leader, then starts Nomad and waits for
// its node to be ready with raw_exec and Consul fingerprinted.
func Start(ctx context.Context, o Options) (*Cluster, error) {
	if o.Datacenter == "" {
		o.Datacenter = "dc1"
	}
	if o.ConsulDatacenter == "" {
		o.ConsulDatacenter = "dc1"
	}
	if o.BindIP == "" {
		o.BindIP = "127.0.0.1"
	}
	if o.NetworkInterface == "" {
		o.NetworkInterface = "lo"
	}
	if o.NodeName == "" {
		o.NodeName = "metal-local"
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	var err error
	if o.ConsulBin == "" {
		if o.ConsulBin, err = FindBinary("consul"); err != nil {
			return nil, err
		}
	}
	if o.NomadBin == "" {
		if o.NomadBin, err = FindBinary("nomad"); err != nil {
			return nil, err
		}
	}
	c := &Cluster{Dir: o.Dir, log: o.Logger}
	if c.Dir == "" {
		if c.Dir, err = os.MkdirTemp("", "metal-cluster-"); err != nil {
			return nil, fmt.Errorf("cluster dir: %w", err)
		}
		c.removeDir = true
	} else if err := os.MkdirAll(c.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("cluster dir: %w", err)
	}

	o.Logger.Info("starting consul", "bin", o.ConsulBin, "dir", c.Dir)
	c.consul, c.ConsulAddr, err = startConsul(ctx, o.ConsulBin, c.Dir, o)
	if err != nil {
		_ = c.cleanupDir()
		return nil, err
	}
	ccfg := consul.DefaultConfig()
	ccfg.Address = c.ConsulAddr
	ccfg.Token = o.ConsulACLToken
	if c.Consul, err = consul.NewClient(ccfg); err != nil {
		_ = c.Stop(context.Background())
		return nil, fmt.Errorf("consul client: %w", err)
	}
	o.Logger.Info("consul ready", "addr", c.ConsulAddr, "pid", c.consul.PID())

	o.Logger.Info("starting nomad", "bin", o.NomadBin)
	c.nomad, c.Nomad, c.NomadAddr, c.NomadToken, err = startNomad(ctx, o.NomadBin, c.Dir, o, c.ConsulAddr)
	if err != nil {
		_ = c.Stop(context.Background())
		return nil, err
	}
	o.Logger.Info("nomad ready", "addr", c.NomadAddr, "pid", c.nomad.PID())
	return c, nil
}

// PIDs returns the process ids of the agents this cluster started.
func (c *Cluster) PIDs() []int {
	var pids []int
	for _, p := range []*process{c.consul, c.nomad} {
		if p != nil {
			pids = append(pids, p.PID())
		}
	}
	return pids
}

// KillNomad kills the Nomad agent alone (SIGKILL), as a crashed client: its
// tasks keep running and Consul stays up.
func (c *Cluster) KillNomad() error {
	if c.nomad == nil {
		return nil
	}
	return c.nomad.cmd.Process.Kill()
}

// Stop purges every job (so no task outlives its agent), waits for their
// allocations to stop, then stops Nomad and Consul by PID and removes a
// temporary directory. It is safe to call more than once.
func (c *Cluster) Stop(ctx context.Context) error {
	var errs []error
	if c.nomad != nil && !c.nomad.exited() && c.Nomad != nil {
		if err := PurgeJobs(ctx, c.Nomad); err != nil {
			errs = append(errs, err)
		}
	}
	for _, p := range []*process{c.nomad, c.consul} {
		if p == nil {
			continue
		}
		if err := p.stop(defaultGrace); err != nil {
			errs = append(errs, err)
		}
	}
	if err := unmountUnder(c.Dir); err != nil {
		errs = append(errs, err)
	}
	if err := c.cleanupDir(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (c *Cluster) cleanupDir() error {
	if !c.removeDir {
		return nil
	}
	if err := os.RemoveAll(c.Dir); err != nil {
		return fmt.Errorf("remove cluster dir: %w", err)
	}
	return nil
}

// PurgeJobs deregisters and purges every job in every namespace and waits
// until none of their allocations is still running.
func PurgeJobs(ctx context.Context, c *nomad.Client) error {
	q := (&nomad.QueryOptions{Namespace: "*"}).WithContext(ctx)
	jobs, _, err := c.Jobs().List(q)
	if err != nil {
		return fmt.Errorf("list jobs: %w", err)
	}
	var errs []error
	for _, j := range jobs {
		w := (&nomad.WriteOptions{Namespace: j.Namespace}).WithContext(ctx)
		if _, _, err := c.Jobs().Deregister(j.ID, true, w); err != nil && !jobGone(err) {
			errs = append(errs, fmt.Errorf("purge job %s: %w", j.ID, err))
		}
	}
	if err := WaitNoRunningAllocs(ctx, c); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// jobGone reports whether a purge failed only because the job is already
// gone: someone else (a gateway tearing its sessions down) purged it
// between the listing and this purge, and Nomad answers 500 "job not
// found" or 404.
func jobGone(err error) bool {
	var ue nomad.UnexpectedResponseError
	if errors.As(err, &ue) && ue.StatusCode() == 404 {
		return true
	}
	return strings.Contains(strings.ToLower(err.Error()), "job not found")
}

// WaitNoRunningAllocs blocks until no allocation's client status is pending
// or running.
func WaitNoRunningAllocs(ctx context.Context, c *nomad.Client) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	var index uint64
	for {
		q := (&nomad.QueryOptions{Namespace: "*", WaitIndex: index, WaitTime: 5 * time.Second}).WithContext(ctx)
		allocs, meta, err := c.Allocations().List(q)
		if err != nil {
			return fmt.Errorf("wait for allocations to stop: %w", err)
		}
		index = meta.LastIndex
		live := 0
		for _, a := range allocs {
			if a.ClientStatus == nomad.AllocClientStatusPending || a.ClientStatus == nomad.AllocClientStatusRunning {
				live++
			}
		}
		if live == 0 {
			return nil
		}
	}
}
