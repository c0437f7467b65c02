package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	consul "github.com/hashicorp/consul/api"
)

// ConsulPlayers keeps players in Consul KV under Prefix, so every gateway
// instance, and a restarted one, knows the same links.
type ConsulPlayers struct {
	KV     *consul.KV
	Prefix string // "metal/players/"
}

// PutPlayer writes a player.
func (c *ConsulPlayers) PutPlayer(ctx context.Context, p Player) error {
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	if _, err := c.KV.Put(&consul.KVPair{Key: c.Prefix + p.Name, Value: b}, (&consul.WriteOptions{}).WithContext(ctx)); err != nil {
		return fmt.Errorf("store player %s: %w", p.Name, err)
	}
	return nil
}

// GetPlayer reads a player (a stale read: a leader election must not stop
// players from starting).
func (c *ConsulPlayers) GetPlayer(ctx context.Context, name string) (Player, bool, error) {
	kv, _, err := c.KV.Get(c.Prefix+name, (&consul.QueryOptions{AllowStale: true}).WithContext(ctx))
	if err != nil {
		return Player{}, false, fmt.Errorf("read player %s: %w", name, err)
	}
	if kv == nil {
		return Player{}, false, nil
	}
	var p Player
	if err := json.Unmarshal(kv.Value, &p); err != nil {
		return Player{}, false, nil
	}
	return p, true, nil
}

// DeletePlayer removes a player, revoking its link.
func (c *ConsulPlayers) DeletePlayer(ctx context.Context, name string) (bool, error) {
	_, found, err := c.GetPlayer(ctx, name)
	if err != nil || !found {
		return false, err
	}
	if _, err := c.KV.Delete(c.Prefix+name, (&consul.WriteOptions{}).WithContext(ctx)); err != nil {
		return false, fmt.Errorf("delete player %s: %w", name, err)
	}
	return true, nil
}

// DeleteExpired removes a player whose link has expired at now, with
// check-and-set: a player re-issued (a new link, a new expiry) after it was
// read, by this gateway or another, is left alone.
func (c *ConsulPlayers) DeleteExpired(ctx context.Context, name string, now time.Time) (bool, error) {
	kv, _, err := c.KV.Get(c.Prefix+name, (&consul.QueryOptions{RequireConsistent: true}).WithContext(ctx))
	if err != nil {
		return false, fmt.Errorf("read player %s: %w", name, err)
	}
	if kv == nil {
		return false, nil
	}
	var p Player
	if json.Unmarshal(kv.Value, &p) == nil && (p.Expires.IsZero() || now.Before(p.Expires)) {
		return false, nil // valid (again)
	}
	kv.Value = nil
	ok, _, err := c.KV.DeleteCAS(kv, (&consul.WriteOptions{}).WithContext(ctx))
	if err != nil {
		return false, fmt.Errorf("delete player %s: %w", name, err)
	}
	return ok, nil
}

// ListPlayers lists every player.
func (c *ConsulPlayers) ListPlayers(ctx context.Context) ([]Player, error) {
	pairs, _, err := c.KV.List(c.Prefix, (&consul.QueryOptions{AllowStale: true}).WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("list players: %w", err)
	}
	out := make([]Player, 0, len(pairs))
	for _, kv := range pairs {
		var p Player
		if json.Unmarshal(kv.Value, &p) == nil && p.Name != "" {
			out = append(out, p)
		}
	}
	return out, nil
}
