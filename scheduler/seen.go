package scheduler

import (
	"context"
	"fmt"
	"strconv"
	"time"

	consul "github.com/hashicorp/consul/api"
)

// Seen: a browser may follow its session through any gateway, and only the
// leader reaps. Every gateway publishes, every seenEvery, when it last saw
// a browser ask about (or watch) each session it was asked about, under
// <root>-seen/<id>; the leader reads that key before reaping a session it
// has not seen itself.

// seenEvery is how often seen times are published: a quarter of the reap
// period (so a session is never reaped while a browser polls another
// gateway), at most 5 s.
func (s *Scheduler) seenEvery() time.Duration {
	d := s.cfg.ReapAfter / 4
	if d <= 0 || d > 5*time.Second {
		d = 5 * time.Second
	}
	return max(d, 100*time.Millisecond)
}

func (s *Scheduler) publishSeen(ctx context.Context) error {
	if s.cfg.ReapAfter <= 0 {
		return nil
	}
	published := map[string]time.Time{}
	return every(ctx, s.seenEvery(), func() {
		now := time.Now()
		s.mu.Lock()
		due := map[string]time.Time{}
		for id, r := range s.records {
			if r.Ended || r.creating {
				continue
			}
			t := s.asked[id]
			if s.watchers[id] > 0 {
				t = now
			}
			if t.After(published[id]) {
				due[id] = t
			}
		}
		for id := range published {
			if _, ok := s.records[id]; !ok {
				delete(published, id)
			}
		}
		s.mu.Unlock()
		for id, t := range due {
			v := strconv.FormatInt(t.UnixMilli(), 10)
			if _, err := s.store.kv.Put(&consul.KVPair{Key: s.store.seenKey(id), Value: []byte(v)}, (&consul.WriteOptions{}).WithContext(ctx)); err != nil {
				s.consulError("publish seen", err)
				return
			}
			published[id] = t
		}
	})
}

// seenElsewhere reads when any gateway last published a browser asking
// about session id (zero when none did).
func (s *Scheduler) seenElsewhere(ctx context.Context, id string) (time.Time, error) {
	p, _, err := s.store.kv.Get(s.store.seenKey(id), (&consul.QueryOptions{AllowStale: true}).WithContext(ctx))
	if err != nil {
		return time.Time{}, fmt.Errorf("read seen: %w", err)
	}
	if p == nil {
		return time.Time{}, nil
	}
	ms, err := strconv.ParseInt(string(p.Value), 10, 64)
	if err != nil {
		return time.Time{}, nil
	}
	return time.UnixMilli(ms), nil
}
