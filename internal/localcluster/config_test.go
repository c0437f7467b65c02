package localcluster

import (
	"errors"
	"strings"
	"testing"
)

func TestConfigsStayOnLoopbackAndOffline(t *testing.T) {
	n := nomadConfig(nomadParams{DataDir: "/d", Datacenter: "dc1", ConsulAddr: "127.0.0.1:1", HTTP: 1, RPC: 2, Serf: 3, MinDynamic: 20000, MaxDynamic: 20499})
	c := consulConfig("/d", "dc1", 1, 2, 3)
	for _, tt := range []struct{ name, cfg, want string }{
		{"nomad update check", n, "disable_update_check = true"},
		{"nomad cloud fingerprinters", n, `"fingerprint.denylist" = "env_aws,env_gce,env_azure,env_digitalocean"`},
		{"nomad bind", n, `bind_addr            = "127.0.0.1"`},
		{"nomad client interface", n, `network_interface = "lo"`},
		{"nomad raw_exec", n, `plugin "raw_exec"`},
		{"consul update check", c, "disable_update_check = true"},
		{"consul bind", c, `bind_addr            = "127.0.0.1"`},
		{"consul client addr", c, `client_addr          = "127.0.0.1"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if !strings.Contains(tt.cfg, tt.want) {
				t.Fatalf("config lacks %q:\n%s", tt.want, tt.cfg)
			}
		})
	}
}

// TestPurgeOfAJobAlreadyGoneIsNotAnError: a purge racing another (a gateway
// tearing its sessions down while `metal dev` stops) gets 500 "job not
// found" from Nomad; that job is gone, which is what was asked.
func TestPurgeOfAJobAlreadyGoneIsNotAnError(t *testing.T) {
	if !jobGone(errors.New("Unexpected response code: 500 (DeleteJob failed: job not found)")) {
		t.Error("500 job not found taken for a failure")
	}
	if jobGone(errors.New("Unexpected response code: 500 (no cluster leader)")) {
		t.Error("an outage taken for a job already gone")
	}
}
