package localcluster

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	consul "github.com/hashicorp/consul/api"
)

// consulConfig renders a single-server Consul agent config bound to loopback.
// DNS, WAN gossip and gRPC are off: nothing here needs them.
func consulConfig(dataDir, datacenter string, http, serfLAN, server int) string {
	return fmt.Sprintf(`# Written by metal (internal/localcluster). Loopback only.
datacenter           = %q
node_name            = "metal-local"
data_dir             = %q
server               = true
bootstrap_expect     = 1
bind_addr            = "127.0.0.1"
advertise_addr       = "127.0.0.1"
client_addr          = "127.0.0.1"
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
`, datacenter, dataDir, http, serfLAN, server)
}

func startConsul(ctx context.Context, bin, dir, datacenter string) (*process, string, error) {
	ports, err := freePorts(3)
	if err != nil {
		return nil, "", err
	}
	dataDir := filepath.Join(dir, "consul-data")
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, "", fmt.Errorf("consul data dir: %w", err)
	}
	cfgPath := filepath.Join(dir, "consul.hcl")
	if err := os.WriteFile(cfgPath, []byte(consulConfig(dataDir, datacenter, ports[0], ports[1], ports[2])), 0o600); err != nil {
		return nil, "", fmt.Errorf("write consul config: %w", err)
	}
	p, err := startProcess("consul", filepath.Join(dir, "consul.log"), bin, "agent", "-config-file", cfgPath)
	if err != nil {
		return nil, "", err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", ports[0])
	cfg := consul.DefaultConfig()
	cfg.Address = addr
	cfg.Scheme = "http"
	client, err := consul.NewClient(cfg)
	if err != nil {
		_ = p.stop(defaultGrace)
		return nil, "", fmt.Errorf("consul client: %w", err)
	}
	err = p.waitFor(ctx, "a raft leader", func(context.Context) (bool, error) {
		leader, err := client.Status().Leader()
		return err == nil && leader != "", err
	})
	if err != nil {
		_ = p.stop(defaultGrace)
		return nil, "", err
	}
	return p, "http://" + addr, nil
}
