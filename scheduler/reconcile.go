package scheduler

import (
	"context"
	"strings"
	"time"

	nomad "github.com/hashicorp/nomad/api"
)

// Reconciliation: Nomad and Consul KV must agree on which sessions exist.
// Every SweepEvery the scheduler compares the metal-session-* jobs and
// their key variables in Nomad with its session records and removes
// orphans in both directions:
//   - a job (or key) whose session is unknown or over is purged: a job
//     registered behind the gateway's back, or one whose purge failed
//     before (Nomad down, a cancelled request), which is so retried until
//     it succeeds;
//   - a live placed session of this scheduler whose job has been gone for
//     longer than sweepGrace (placement in flight registers it within that)
//     fails with ReasonJobGone, and its record goes the usual way.
// A job is an orphan only when no live record for it is in KV either. Only
// the leader sweeps.

// sweepGrace is how long a placed session may be without its job (the
// moment between storing the placement and registering the job): one
// sweep period, at least 5 s.
func (s *Scheduler) sweepGrace() time.Duration {
	return max(s.cfg.SweepEvery, 5*time.Second)
}

// ReasonJobGone ends a session whose job was removed behind the gateway.
const ReasonJobGone = "its Nomad job was removed"

func (s *Scheduler) sweepLoop(ctx context.Context) error {
	if s.cfg.SweepEvery <= 0 {
		return nil
	}
	return every(ctx, s.cfg.SweepEvery, func() {
		if err := s.sweep(ctx, time.Now()); err != nil && ctx.Err() == nil {
			s.log.Warn("sweep", "err", err)
		}
	})
}

// sweep runs one reconciliation pass.
func (s *Scheduler) sweep(ctx context.Context, now time.Time) error {
	q := (&nomad.QueryOptions{}).WithContext(ctx)
	stubs, _, err := s.nomad.Jobs().List((&nomad.QueryOptions{Prefix: s.cfg.JobPrefix}).WithContext(ctx))
	if err != nil {
		return s.nomadErr(err)
	}
	vars, _, err := s.nomad.Variables().PrefixList("nomad/jobs/"+s.cfg.JobPrefix, q)
	if err != nil {
		return s.nomadErr(err)
	}
	jobs := map[string]bool{}
	for _, j := range stubs {
		if id, ok := strings.CutPrefix(j.ID, s.cfg.JobPrefix); ok {
			jobs[id] = true
		}
	}
	keys := map[string]bool{}
	for _, v := range vars {
		if id, ok := strings.CutPrefix(v.Path, "nomad/jobs/"+s.cfg.JobPrefix); ok {
			keys[id] = true
		}
	}
	// Read KV after Nomad: a gateway stores a placement before it registers
	// the job, so every job listed above has its record in this list, even
	// one another gateway is placing right now.
	stored, _, err := s.store.list(ctx, 0, true)
	if err != nil {
		return err
	}
	inKV := map[string]*record{}
	for _, r := range stored {
		inKV[r.ID] = r
	}
	var orphans, gone []string
	s.mu.Lock()
	live := func(id string) bool {
		if r, ok := s.records[id]; ok {
			return !r.Ended && (r.Placed || r.purging)
		}
		r, ok := inKV[id] // another gateway's session
		return ok && !r.Ended && r.Placed
	}
	for id := range jobs {
		if !live(id) {
			orphans = append(orphans, id)
		}
	}
	for id := range keys {
		if !jobs[id] && !live(id) {
			orphans = append(orphans, id)
		}
	}
	for id, r := range s.records {
		if jobs[id] {
			r.placedAt = time.Time{}
		}
		if r.Ended || !r.Placed || r.purging || jobs[id] {
			continue
		}
		if r.placedAt.IsZero() {
			r.placedAt = now // first seen without its job: start the grace
			continue
		}
		if now.Sub(r.placedAt) >= s.sweepGrace() {
			gone = append(gone, id)
		}
	}
	s.mu.Unlock()
	for _, id := range orphans {
		s.log.Info("sweep: purging an orphan session job", "session", id)
		if err := s.purgeJob(ctx, id); err != nil {
			s.log.Warn("sweep: purge", "session", id, "err", err) // next pass retries
		}
	}
	for _, id := range gone {
		s.log.Warn("sweep: session without its job", "session", id)
		s.fail(ctx, id, ReasonJobGone)
	}
	return nil
}
