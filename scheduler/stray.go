package scheduler

import (
	"context"
	"strings"

	nomad "github.com/hashicorp/nomad/api"
)

// countStray reads the session jobs Nomad holds (pending or running) and
// counts those the view does not count against capacity: a job whose
// record is unknown here, queued, or ended and not held (holdsJobLocked).
// Such a job is Nomad's truth that a slot is taken, whatever the records
// say: a registration that outlived its record's change, one made behind
// the gateways' back until the sweep purges it, or a view that has not
// caught up. The Capacity bound subtracts them from every edge (their edge
// is not known), so Nomad never holds more session jobs than capacity. The
// leader reads it before each placement pass; on error the last count
// stays.
func (s *Scheduler) countStray(ctx context.Context) {
	stubs, _, err := s.nomad.Jobs().List((&nomad.QueryOptions{Prefix: s.cfg.JobPrefix}).WithContext(ctx))
	if err != nil {
		if ctx.Err() == nil {
			_ = s.nomadErr(err)
		}
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, j := range stubs {
		id, ok := strings.CutPrefix(j.ID, s.cfg.JobPrefix)
		if !ok || j.Status == "dead" {
			continue
		}
		r := s.records[id]
		if r != nil && s.holdsSlotLocked(id, r) {
			continue
		}
		n++
		if !s.strayLogged[id] {
			s.strayLogged[id] = true
			state := "unknown here"
			if r != nil {
				state = string(s.statusLocked(r).State)
			}
			s.log.Warn("a session job Nomad holds counts against capacity", "job", j.ID, "status", j.Status, "record", state)
		}
	}
	if n == 0 {
		clear(s.strayLogged)
	}
	s.stray = n
}
