package gateway

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	consul "github.com/hashicorp/consul/api"
	pionturn "github.com/pion/turn/v3"
)

// TURNService is the Consul service TURN relays register.
const TURNService = "metal-turn"

// ConsulTURN picks the passing TURN relays of a session's datacenter from
// Consul (stale reads, cached briefly, so a Consul leader election does not
// stop players) and hands out TURN REST credentials for them.
type ConsulTURN struct {
	Health *consul.Health
	Secret string
	TTL    time.Duration

	mu    sync.Mutex
	cache map[string]cachedRelays
}

type cachedRelays struct {
	at    time.Time
	addrs []string
}

// ICEServers returns the relays of datacenter with credentials for session.
func (c *ConsulTURN) ICEServers(ctx context.Context, session, datacenter string) ([]ICEServer, error) {
	addrs, err := c.relays(ctx, datacenter)
	if err != nil {
		return nil, err
	}
	if len(addrs) == 0 {
		return []ICEServer{}, nil
	}
	user, pass, err := pionturn.GenerateLongTermTURNRESTCredentials(c.Secret, session, c.TTL)
	if err != nil {
		return nil, fmt.Errorf("turn credentials: %w", err)
	}
	var urls []string
	for _, a := range addrs {
		if strings.HasPrefix(a, "turns:") {
			urls = append(urls, a)
			continue
		}
		urls = append(urls, "turn:"+a+"?transport=udp", "turn:"+a+"?transport=tcp")
	}
	return []ICEServer{{URLs: urls, Username: user, Credential: pass}}, nil
}

func (c *ConsulTURN) relays(ctx context.Context, datacenter string) ([]string, error) {
	c.mu.Lock()
	if e, ok := c.cache[datacenter]; ok && time.Since(e.at) < 5*time.Second {
		c.mu.Unlock()
		return e.addrs, nil
	}
	c.mu.Unlock()
	q := (&consul.QueryOptions{AllowStale: true}).WithContext(ctx)
	entries, _, err := c.Health.Service(TURNService, "dc-"+datacenter, true, q)
	if err != nil {
		c.mu.Lock()
		defer c.mu.Unlock()
		if e, ok := c.cache[datacenter]; ok {
			return e.addrs, nil // Consul unreachable: serve what we last knew
		}
		return nil, fmt.Errorf("find turn relays: %w", err)
	}
	var addrs []string
	for _, e := range entries {
		ip := e.Service.Meta["relay_ip"]
		if net.ParseIP(ip) == nil {
			ip = e.Service.Address
		}
		if ip == "" {
			ip = e.Node.Address
		}
		addrs = append(addrs, net.JoinHostPort(ip, strconv.Itoa(e.Service.Port)))
		// TURN over TLS, for networks that block UDP: named by the
		// certificate's host name when the relay gives one.
		if tp, err := strconv.Atoi(e.Service.Meta["tls_port"]); err == nil && tp > 0 && tp < 65536 {
			host := ip
			if name := e.Service.Meta["tls_name"]; name != "" {
				host = name
			}
			addrs = append(addrs, "turns:"+net.JoinHostPort(host, strconv.Itoa(tp))+"?transport=tcp")
		}
	}
	c.mu.Lock()
	if c.cache == nil {
		c.cache = map[string]cachedRelays{}
	}
	c.cache[datacenter] = cachedRelays{at: time.Now(), addrs: addrs}
	c.mu.Unlock()
	return addrs, nil
}

var errNoSecret = errors.New("turn: no secret")

// Validate checks the provider's settings.
func (c *ConsulTURN) Validate() error {
	if len(c.Secret) < 16 {
		return fmt.Errorf("-turn-secret: %w (want at least 16 characters)", errNoSecret)
	}
	if c.TTL <= 0 {
		return errors.New("-turn-ttl must be positive")
	}
	return nil
}
