package localcluster

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	consul "github.com/hashicorp/consul/api"
)

// consulConfig renders a Consul agent config: a single server bound to
// loopback by default, or a client joining servers. DNS, WAN gossip and gRPC
// are off: nothing here needs them.
func consulConfig(dataDir, datacenter string, http, serfLAN, server int) string {
	return consulAgentConfig(consulParams{DataDir: dataDir, Datacenter: datacenter, HTTP: http, SerfLAN: serfLAN,
		Server: server, BindIP: "127.0.0.1", NodeName: "metal-local", IsServer: true})
}

type consulParams struct {
	DataDir, Datacenter, NodeName, BindIP string
	HTTP, SerfLAN, Server                 int
	IsServer                              bool
	Join                                  []string
	ACLToken                              string // management token: ACLs on, default deny
}

func consulAgentConfig(p consulParams) string {
	role := "server               = true\nbootstrap_expect     = 1"
	if !p.IsServer {
		role = "server               = false\nretry_join           = " + hclList(p.Join)
	}
	return fmt.Sprintf(`# Written by metal (internal/localcluster). Loopback or test namespaces and networks only.
datacenter           = %q
node_name            = %q
data_dir             = %q
%s
bind_addr            = %q
advertise_addr       = %q
client_addr          = %q
disable_update_check = true
log_level            = "WARN"
ports {
  http     = %d
  https    = -1
  dns      = -1
  grpc     = -1
  grpc_tls = -1
  serf_lan = %d
  serf_wan = -1
  server   = %d
}
performance {
  raft_multiplier = 1
}
%s`, p.Datacenter, p.NodeName, p.DataDir, role, p.BindIP, p.BindIP, p.BindIP, p.HTTP, p.SerfLAN, p.Server, consulACL(p.ACLToken))
}

// consulACL turns Consul's ACLs on, deny by default, with token as the
// initial management and agent token ("" for none).
func consulACL(token string) string {
	if token == "" {
		return ""
	}
	return fmt.Sprintf(`acl {
  enabled                  = true
  default_policy           = "deny"
  enable_token_persistence = false
  tokens {
    initial_management = %q
    agent              = %q
  }
}
`, token, token)
}

func hclList(items []string) string {
	q := make([]string, len(items))
	for i, it := range items {
		q[i] = fmt.Sprintf("%q", it)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

func startConsul(ctx context.Context, bin, dir string, o Options) (*process, string, error) {
	ports, err := agentPorts(o, 3, 8500, 8301, 8300)
	if err != nil {
		return nil, "", err
	}
	dataDir := filepath.Join(dir, "consul-data")
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, "", fmt.Errorf("consul data dir: %w", err)
	}
	cfgPath := filepath.Join(dir, "consul.hcl")
	text := consulAgentConfig(consulParams{DataDir: dataDir, Datacenter: o.ConsulDatacenter, NodeName: o.NodeName,
		BindIP: o.BindIP, HTTP: ports[0], SerfLAN: ports[1], Server: ports[2], IsServer: len(o.ConsulJoin) == 0, Join: o.ConsulJoin,
		ACLToken: o.ConsulACLToken})
	if err := os.WriteFile(cfgPath, []byte(text), 0o600); err != nil {
		return nil, "", fmt.Errorf("write consul config: %w", err)
	}
	p, err := startProcess("consul", filepath.Join(dir, "consul.log"), o, bin, "agent", "-config-file", cfgPath)
	if err != nil {
		return nil, "", err
	}
	addr := fmt.Sprintf("%s:%d", o.BindIP, ports[0])
	cfg := consul.DefaultConfig()
	cfg.Address = addr
	cfg.Scheme = "http"
	cfg.Token = o.ConsulACLToken
	client, err := consul.NewClient(cfg)
	if err != nil {
		_ = p.stop(defaultGrace)
		return nil, "", fmt.Errorf("consul client: %w", err)
	}
	err = p.waitFor(ctx, "a raft leader", func(context.Context) (bool, error) {
		leader, err := client.Status().Leader()
		if err != nil || leader == "" {
			return false, err
		}
		// A client agent is ready once it sees itself in the catalog.
		if len(o.ConsulJoin) > 0 {
			nodes, _, err := client.Catalog().Nodes(nil)
			if err != nil {
				return false, err
			}
			for _, n := range nodes {
				if n.Node == o.NodeName {
					return true, nil
				}
			}
			return false, nil
		}
		return true, nil
	})
	if err != nil {
		_ = p.stop(defaultGrace)
		return nil, "", err
	}
	return p, "http://" + addr, nil
}
