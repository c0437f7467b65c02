package scheduler

import (
	"context"
	"errors"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// The shared state: every gateway keeps a local view of the session
// records in Consul KV, followed with blocking queries, and changes a
// record only by check-and-set on the version it read (store.go). A copy
// in the view is replaced only by a newer version (a higher ModifyIndex),
// so a stale read never undoes a write this gateway made, and a change this
// gateway has made locally and not stored yet (a slot reserved before the
// call to Nomad) stays until the store answers.

// watchRecords follows the session records until ctx ends.
func (s *Scheduler) watchRecords(ctx context.Context) error {
	b := backoff.NewExponentialBackOff()
	b.MaxInterval, b.MaxElapsedTime = 5*time.Second, 0
	var index uint64
	for ctx.Err() == nil {
		recs, idx, err := s.store.list(ctx, index, false)
		if err != nil {
			if ctx.Err() == nil {
				s.consulError("watch sessions", err)
				sleep(ctx, b.NextBackOff())
			}
			continue
		}
		b.Reset()
		s.adoptAll(recs, idx)
		if idx < index {
			idx = 0 // Consul's index went backwards (a restore): start over
		}
		index = idx
	}
	return nil
}

// adoptAll merges a full listing (at KV index idx) into the view.
func (s *Scheduler) adoptAll(recs []*record, idx uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	changed := !s.loaded
	now := time.Now()
	listed := make(map[string]bool, len(recs))
	var ended []string
	for _, r := range recs {
		listed[r.ID] = true
		wasLive := false
		if cur, ok := s.records[r.ID]; ok {
			wasLive = !cur.Ended
		}
		if s.adoptLocked(r, false, now) {
			changed = true
			if wasLive && r.Ended && r.Placed {
				ended = append(ended, r.ID)
			}
		}
	}
	// Sessions another gateway ended (a player leaving there): the leader
	// purges their jobs too, in case that gateway's purge raced a
	// registration in flight here.
	if len(ended) > 0 && s.leadCtx != nil && s.leadCtx.Err() == nil {
		ctx := s.leadCtx
		go func() {
			for _, id := range ended {
				if err := s.purgeJob(ctx, id); err != nil && ctx.Err() == nil {
					s.log.Warn("purge a session ended elsewhere", "session", id, "err", err) // the sweep retries
				}
			}
		}()
	}
	for id, cur := range s.records {
		// Gone from KV (an ended session forgotten): forget it here too.
		// A record this view has not seen stored at or before idx is
		// being created right now; it stays.
		if !listed[id] && cur.modifyIndex != 0 && cur.modifyIndex <= idx {
			s.forgetLocked(id)
			changed = true
		}
	}
	s.loaded = true
	if changed {
		s.notifyLocked()
		s.poke() // a follower's admission or a player leaving there: the leader places
	}
}

// adoptLocked takes r into the view if it is new or newer than the copy
// held (or, with force, whatever the copy). It reports whether the view
// changed. Call with s.mu held.
func (s *Scheduler) adoptLocked(r *record, force bool, now time.Time) bool {
	cur, ok := s.records[r.ID]
	if !ok {
		s.records[r.ID] = r
		s.lastSeen[r.ID] = now // a new view gives browsers a full reap period
		return true
	}
	if !force && r.modifyIndex <= cur.modifyIndex {
		return false
	}
	r.keepLocal(cur)
	*cur = *r
	return true
}

// forgetLocked drops a session from the view. Call with s.mu held.
func (s *Scheduler) forgetLocked(id string) {
	delete(s.records, id)
	delete(s.allocs, id)
	delete(s.endpoints, id)
	delete(s.lastEP, id)
	delete(s.lastSeen, id)
	delete(s.asked, id)
	delete(s.watchers, id)
	delete(s.probeFail, id)
}

// refresh reads one record again and takes it into the view whatever the
// copy held (after a lost check-and-set, or a write that failed after a
// local change).
func (s *Scheduler) refresh(ctx context.Context, id string) error {
	r, err := s.store.get(ctx, id)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if r == nil {
		if _, ok := s.records[id]; ok {
			s.forgetLocked(id)
			s.notifyLocked()
		}
		return nil
	}
	s.adoptLocked(r, true, time.Now())
	s.notifyLocked()
	return nil
}

// errUnchanged is returned by update when change declined (the record has
// moved on: ended, or already as wanted).
var errUnchanged = errors.New("nothing to change")

// update changes a session's record with change, applied to the view's
// copy, and stores it by check-and-set; when another gateway changed it
// first, it reads it again and applies change to that. With fenced, the
// write commits only while this gateway leads. change returns false to
// change nothing (update then returns errUnchanged).
func (s *Scheduler) update(ctx context.Context, id string, fenced bool, change func(r *record) bool) (*record, error) {
	for attempt := 0; ; attempt++ {
		s.mu.Lock()
		cur, ok := s.records[id]
		if !ok {
			s.mu.Unlock()
			return nil, ErrNotFound
		}
		rc := *cur
		s.mu.Unlock()
		if !change(&rc) {
			return &rc, errUnchanged
		}
		var f *fence
		if fenced {
			if f = s.fence(); f == nil {
				_ = s.refresh(ctx, id) // undo the local change
				return nil, ErrNotLeader
			}
		}
		err := s.store.update(ctx, &rc, f)
		if errors.Is(err, errConflict) && attempt < 8 {
			if err := s.refresh(ctx, id); err != nil {
				return nil, err
			}
			continue
		}
		if err != nil {
			if errors.Is(err, ErrUnavailable) {
				s.consulError("store session", err)
			}
			_ = s.refresh(context.WithoutCancel(ctx), id)
			return nil, err
		}
		s.mu.Lock()
		if cur, ok := s.records[id]; ok {
			s.adoptLocked(&rc, false, time.Now())
			rc = *cur
		}
		s.notifyLocked()
		s.mu.Unlock()
		return &rc, nil
	}
}
