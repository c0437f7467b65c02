package gateway

import (
	"context"
	"time"
)

// pruneLoop removes expired player records every interval, on the gateway
// that leads (one writer is enough; the others would only race it).
func (s *Server) pruneLoop(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if s.leading() {
			s.pruneExpired(ctx, time.Now())
		}
	}
}

// pruneExpired deletes every player whose link has expired.
func (s *Server) pruneExpired(ctx context.Context, now time.Time) {
	players, err := s.players.ListPlayers(ctx)
	if err != nil {
		s.log.Warn("prune players", "err", err)
		return
	}
	for _, p := range players {
		if p.Expires.IsZero() || now.Before(p.Expires) {
			continue
		}
		removed, err := s.players.DeleteExpired(ctx, p.Name, now)
		if err != nil {
			s.log.Warn("prune player", "player", p.Name, "err", err)
			continue
		}
		if !removed {
			continue // re-issued since the listing
		}
		s.log.Info("expired player removed", "player", p.Name)
	}
}
