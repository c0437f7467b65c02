package gateway

import (
	"context"
	"slices"
	"testing"
	"time"

	consul "github.com/hashicorp/consul/api"

	"github.com/metal-stream/metal/internal/localcluster/clustertest"
)

// TestConsulTURNOffersTURNS: a relay that registers a TLS port is handed
// out as turn: (UDP and TCP) and turns:, named by its certificate's host
// name when it gives one.
func TestConsulTURNOffersTURNS(t *testing.T) {
	c := clustertest.Cluster(t)
	for _, svc := range []*consul.AgentServiceRegistration{
		{ID: "turn-a", Name: TURNService, Port: 3478, Tags: []string{"dc-edge-x"},
			Meta: map[string]string{"relay_ip": "203.0.113.5", "tls_port": "5349", "tls_name": "turn-a.example.net"}},
		{ID: "turn-b", Name: TURNService, Port: 3478, Tags: []string{"dc-edge-x"},
			Meta: map[string]string{"relay_ip": "203.0.113.6", "tls_port": "0"}},
	} {
		if err := c.Consul.Agent().ServiceRegister(svc); err != nil {
			t.Fatal(err)
		}
		id := svc.ID
		t.Cleanup(func() { _ = c.Consul.Agent().ServiceDeregister(id) })
	}
	p := &ConsulTURN{Health: c.Consul.Health(), Secret: "turn-secret-0123456789abcdef", TTL: time.Minute}
	ice, err := p.ICEServers(context.Background(), "sess", "edge-x")
	if err != nil || len(ice) != 1 {
		t.Fatalf("ICE servers %v, %v", ice, err)
	}
	urls := ice[0].URLs
	for _, want := range []string{
		"turn:203.0.113.5:3478?transport=udp", "turn:203.0.113.5:3478?transport=tcp",
		"turns:turn-a.example.net:5349?transport=tcp", "turn:203.0.113.6:3478?transport=udp",
	} {
		if !slices.Contains(urls, want) {
			t.Errorf("no %s in %v", want, urls)
		}
	}
	for _, u := range urls {
		if u == "turns:203.0.113.6:0?transport=tcp" {
			t.Errorf("a relay without TLS offered as turns: %v", urls)
		}
	}
}
