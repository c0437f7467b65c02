package localcluster

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	nomad "github.com/hashicorp/nomad/api"
)

// cloudFingerprinters are denied so that the client never probes the cloud
// metadata address (169.254.169.254): without this, a dev agent sends HTTP
// there at start.
const cloudFingerprinters = "env_aws,env_gce,env_azure,env_digitalocean"

type nomadParams struct {
	Name        string
	BindIP      string
	Interface   string
	Role        string
	Servers     []string
	Meta        map[string]string
	DataDir     string
	Datacenter  string
	ConsulAddr  string // host:port
	HTTP        int
	RPC         int
	Serf        int
	MinDynamic  int
	MaxDynamic  int
	ClientExtra string // extra HCL inside the client block
	Extra       string // extra top-level HCL (plugins, ...)
	PluginDir   string
	Heartbeat   string // server: min_heartbeat_ttl and heartbeat_grace
	ConsulToken string
}

// nomadConfig renders a combined server and client agent bound to loopback
// with raw_exec enabled. The dynamic port range is a random window so that
// several test clusters on one machine rarely hand out the same port.
func nomadConfig(p nomadParams) string {
	if p.Name == "" {
		p.Name, p.BindIP, p.Interface = "metal-local", "127.0.0.1", "lo"
	}
	server := "server {\n  enabled          = true\n  bootstrap_expect = 1\n}"
	if p.Heartbeat != "" {
		server = fmt.Sprintf("server {\n  enabled          = true\n  bootstrap_expect = 1\n  min_heartbeat_ttl = %q\n  heartbeat_grace   = %q\n}", p.Heartbeat, p.Heartbeat)
	}
	clientOn, servers := "true", ""
	switch p.Role {
	case "server":
		clientOn = "false"
	case "client":
		server = "server {\n  enabled = false\n}"
		servers = "  servers = " + hclList(p.Servers) + "\n"
	}
	meta := ""
	if len(p.Meta) > 0 {
		keys := make([]string, 0, len(p.Meta))
		for k := range p.Meta {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		meta = "  meta = {\n"
		for _, k := range keys {
			meta += fmt.Sprintf("    %q = %q\n", k, p.Meta[k])
		}
		meta += "  }\n"
	}
	return fmt.Sprintf(`# Written by metal (internal/localcluster). Loopback or test namespaces only.
name                 = %q
region               = "global"
datacenter           = %q
data_dir             = %q
bind_addr            = %q
disable_update_check = true
log_level            = "WARN"

ports {
  http = %d
  rpc  = %d
  serf = %d
}

advertise {
  http = %q
  rpc  = %q
  serf = %q
}

%s

client {
  enabled           = %s
%s%s  network_interface = %q
  min_dynamic_port  = %d
  max_dynamic_port  = %d
  gc_max_allocs     = 200
  reserved {
    # TURN relay ports (jobs/turn.nomad.hcl)
    reserved_ports = "49160-49559"
  }
  options = {
    "fingerprint.denylist" = %q
  }
%s
}

plugin "raw_exec" {
  config {
    enabled = true
  }
}

consul {
  address = %q%s
}
%s
%s`, p.Name, p.Datacenter, p.DataDir, p.BindIP, p.HTTP, p.RPC, p.Serf, p.BindIP, p.BindIP, p.BindIP,
		server, clientOn, servers, meta, p.Interface, p.MinDynamic, p.MaxDynamic,
		cloudFingerprinters, p.ClientExtra, p.ConsulAddr, consulToken(p.ConsulToken), pluginDir(p.PluginDir), p.Extra)
}

func dynamicPorts(o Options) int {
	if o.DynamicPorts > 0 {
		return o.DynamicPorts
	}
	return 500
}

func pluginDir(dir string) string {
	if dir == "" {
		return ""
	}
	return fmt.Sprintf("plugin_dir = %q\n", dir)
}

func startNomad(ctx context.Context, bin, dir string, o Options, consulAddr string) (*process, *nomad.Client, string, string, error) {
	ports, err := agentPorts(o, 3, 4646, 4647, 4648)
	if err != nil {
		return nil, nil, "", "", err
	}
	dataDir := filepath.Join(dir, "nomad-data")
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, nil, "", "", fmt.Errorf("nomad data dir: %w", err)
	}
	if o.ACL {
		o.NomadHCL += "\nacl {\n  enabled = true\n}\n"
	}
	if o.Docker {
		o.NomadHCL += dockerPlugin
	}
	minDyn := 20000 + rand.IntN(22)*500
	cfg := nomadConfig(nomadParams{
		Name:        o.NodeName,
		BindIP:      o.BindIP,
		Interface:   o.NetworkInterface,
		Role:        o.NomadRole,
		Servers:     o.NomadServers,
		Meta:        o.ClientMeta,
		DataDir:     dataDir,
		Datacenter:  o.Datacenter,
		Heartbeat:   heartbeat(o),
		ConsulToken: o.ConsulACLToken,
		ConsulAddr:  strings.TrimPrefix(consulAddr, "http://"),
		HTTP:        ports[0],
		RPC:         ports[1],
		Serf:        ports[2],
		MinDynamic:  minDyn,
		MaxDynamic:  minDyn + dynamicPorts(o) - 1,
		ClientExtra: o.NomadClientHCL,
		Extra:       o.NomadHCL,
		PluginDir:   o.PluginDir,
	})
	cfgPath := filepath.Join(dir, "nomad.hcl")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return nil, nil, "", "", fmt.Errorf("write nomad config: %w", err)
	}
	p, err := startProcess("nomad", filepath.Join(dir, "nomad.log"), o, bin, "agent", "-config", cfgPath)
	if err != nil {
		return nil, nil, "", "", err
	}
	addr := fmt.Sprintf("http://%s:%d", o.BindIP, ports[0])
	ncfg := nomad.DefaultConfig()
	ncfg.Address = addr
	client, err := nomad.NewClient(ncfg)
	if err != nil {
		_ = p.stop(defaultGrace)
		return nil, nil, "", "", fmt.Errorf("nomad client: %w", err)
	}
	var token string
	if o.ACL {
		err := p.waitFor(ctx, "ACL bootstrap", func(context.Context) (bool, error) {
			t, _, err := client.ACLTokens().Bootstrap(nil)
			if err != nil {
				return false, err
			}
			token = t.SecretID
			return true, nil
		})
		if err != nil {
			_ = p.stop(defaultGrace)
			return nil, nil, "", "", err
		}
		client.SetSecretID(token)
	}
	if err := waitNomadReady(ctx, p, client, o); err != nil {
		_ = p.stop(defaultGrace)
		return nil, nil, "", "", err
	}
	return p, client, addr, token, nil
}

// waitNomadReady waits for a leader, then for the local node to be ready,
// eligible, with raw_exec healthy and Consul fingerprinted. The node list is
// read with blocking queries, so this wakes on change rather than on a timer.
func waitNomadReady(ctx context.Context, p *process, c *nomad.Client, o Options) error {
	minDevices := o.MinDevices
	err := p.waitFor(ctx, "a raft leader", func(context.Context) (bool, error) {
		leader, err := c.Status().Leader()
		return err == nil && leader != "", err
	})
	if err != nil || o.NomadRole == "server" {
		return err
	}
	var index uint64
	return p.waitFor(ctx, "a ready client with raw_exec and consul", func(ctx context.Context) (bool, error) {
		q := (&nomad.QueryOptions{WaitIndex: index, WaitTime: 2 * time.Second}).WithContext(ctx)
		nodes, meta, err := c.Nodes().List(q)
		if err != nil {
			return false, err
		}
		index = meta.LastIndex
		for _, n := range nodes {
			if n.Name != o.NodeName {
				continue
			}
			if n.Status != nomad.NodeStatusReady || n.SchedulingEligibility != nomad.NodeSchedulingEligible {
				continue
			}
			d, ok := n.Drivers["raw_exec"]
			if !ok || !d.Healthy {
				continue
			}
			if d, ok := n.Drivers["docker"]; o.Docker && (!ok || !d.Healthy) {
				continue
			}
			node, _, err := c.Nodes().Info(n.ID, (&nomad.QueryOptions{}).WithContext(ctx))
			if err != nil {
				return false, err
			}
			devices := 0
			if node.NodeResources != nil {
				for _, d := range node.NodeResources.Devices {
					devices += len(d.Instances)
				}
			}
			if node.Attributes["consul.version"] != "" && devices >= minDevices {
				return true, nil
			}
		}
		// The consul fingerprint is periodic and does not bump the node list
		// index; do not block on it once the node itself is ready.
		if len(nodes) > 0 {
			index = 0
		}
		return false, nil
	})
}

// dockerPlugin configures Nomad's docker driver for a machine whose images
// exist only in the local engine: Nomad must never remove one it no longer
// uses (nothing could pull it back). Pinned tags (not latest) keep it from
// pulling at all.
const dockerPlugin = `
plugin "docker" {
  config {
    gc {
      image = false
    }
  }
}
`

func heartbeat(o Options) string {
	if o.HeartbeatTTL <= 0 {
		return ""
	}
	return o.HeartbeatTTL.String()
}

func consulToken(t string) string {
	if t == "" {
		return ""
	}
	return fmt.Sprintf("\n  token   = %q", t)
}
