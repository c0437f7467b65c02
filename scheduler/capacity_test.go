package scheduler

import (
	"context"
	"errors"
	"testing"
	"time"

	nomad "github.com/hashicorp/nomad/api"
)

// TestEndedSessionSlot: an ended session counts against capacity while
// Nomad may still run its job, and only then.
//   - A live allocation holds its slot even after this gateway saw the
//     purge succeed: a purge that lands before a registration in flight
//     elsewhere leaves a job Nomad runs.
//   - With no allocation seen and no purge seen, the slot is held for
//     endedHold, and holdEndsLocked says when it frees, so the placement
//     loop is woken then (a new leader that followed while the session
//     ended sees neither the allocation nor the purge).
func TestEndedSessionSlot(t *testing.T) {
	s := &Scheduler{records: map[string]*record{}, allocs: map[string]*allocInfo{}}
	r := &record{ID: "s1", Placed: true, Ended: true, EndedAt: time.Now().Add(-10 * time.Second), Datacenter: "edge-1"}
	s.records["s1"] = r

	if !s.holdsJobLocked("s1", r) {
		t.Fatal("an ended session with no allocation and no purge seen freed its slot at once")
	}
	if d := s.holdEndsLocked(); d <= 15*time.Second || d > endedHold-10*time.Second {
		t.Fatalf("the hold ends in %v, want about %v", d, endedHold-10*time.Second)
	}
	if got := s.activeLocked()["edge-1"]; got != 1 {
		t.Fatalf("active = %d, want 1", got)
	}

	r.EndedAt = time.Now().Add(-endedHold - time.Second)
	if s.holdsJobLocked("s1", r) || s.holdEndsLocked() != 0 {
		t.Fatal("the time hold outlived endedHold")
	}

	r.EndedAt = time.Now()
	r.purged = true
	if s.holdsJobLocked("s1", r) || s.holdEndsLocked() != 0 {
		t.Fatal("a purged session with no allocation still holds its slot")
	}

	// The purge landed at Nomad index 100. The purged registration's
	// allocation (created before) is being stopped by Nomad, and its later
	// updates are ignored (observeAlloc): it does not hold the slot, or
	// the slot would stay taken until the record is forgotten.
	r.purgedIndex = 100
	s.allocs["s1"] = &allocInfo{id: "a1", clientStatus: nomad.AllocClientStatusRunning, desiredStatus: nomad.AllocDesiredStatusRun, createIndex: 90}
	if s.holdsJobLocked("s1", r) {
		t.Fatal("the purged registration's allocation holds the slot")
	}
	// A registration that landed after the purge (in flight at the old
	// leader): Nomad runs it, so it holds the slot until it stops.
	s.allocs["s1"] = &allocInfo{id: "a2", clientStatus: nomad.AllocClientStatusRunning, desiredStatus: nomad.AllocDesiredStatusRun, createIndex: 120}
	if !s.holdsJobLocked("s1", r) {
		t.Fatal("a job registered after the purge stopped counting because a purge was seen")
	}
	s.allocs["s1"].desiredStatus = nomad.AllocDesiredStatusStop
	if s.holdsJobLocked("s1", r) {
		t.Fatal("a stopped allocation still holds its slot")
	}
}

// TestPurgeOfAMissingJobIsDone: Nomad answers the purge of a job that is
// already gone (one being deregistered) with 500 "job not found", and a
// variable that is gone with 404: both count as done.
func TestPurgeOfAMissingJobIsDone(t *testing.T) {
	for _, err := range []error{
		errors.New(`Unexpected response code: 500 (job not found)`),
		errors.New(`Unexpected response code: 404 (variable not found)`),
	} {
		if !isNotFound(err) {
			t.Errorf("%v: not taken as gone", err)
		}
	}
	if isNotFound(errors.New(`Unexpected response code: 500 (rpc error: no leader)`)) {
		t.Error("an outage taken as gone")
	}
}

// TestStrayJobHoldsASlot: a session job Nomad holds that no live placed
// record accounts for (registered behind the gateways' back, or one whose
// record the view has lost) takes a slot under the Capacity bound until it
// is gone: with capacity 1, a new session queues, and is placed once the
// sweep purges the stray job.
func TestStrayJobHoldsASlot(t *testing.T) {
	s, _ := newScheduler(t, func(c *Config) { c.Capacity, c.QueueBound = 1, 5; c.SweepEvery = 0 })
	ctx := context.Background()
	registerBehindTheBack(t, s, "0123456789abcdef0123456789abcdef")
	st, _, err := s.Enqueue(ctx, "p", Prefs{})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second) // placement passes run on every change
	if got, _ := s.Get(st.ID); got.State != StateQueued {
		t.Fatalf("with a stray session job at capacity 1: %s, want queued", got.State)
	}
	if err := s.sweep(ctx, time.Now()); err != nil {
		t.Fatal(err)
	}
	s.poke()
	waitState(t, s, st.ID, StateStarting)
}
