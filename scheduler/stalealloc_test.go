package scheduler

import (
	"context"
	"testing"

	nomad "github.com/hashicorp/nomad/api"
)

// TestAllocOfAPurgedRegistrationIsIgnored: Nomad refused a session (a
// blocked evaluation), the gateway sent it back to the queue and purged its
// job, but the evaluation placed an allocation before the purge landed. That
// allocation's events, its stop included, are not the session's: it is
// neither recorded nor acted on, while the session is being purged, queued,
// or placed again; an allocation created after the purge is.
func TestAllocOfAPurgedRegistrationIsIgnored(t *testing.T) {
	s := &Scheduler{changed: make(chan struct{}), kick: make(chan struct{}, 1), records: map[string]*record{}, allocs: map[string]*allocInfo{}}
	r := &record{ID: "s1", Placed: false, purging: true}
	s.records["s1"] = r
	stale := &allocInfo{id: "a-old", clientStatus: nomad.AllocClientStatusRunning, desiredStatus: nomad.AllocDesiredStatusRun, createIndex: 90, modifyIndex: 90}
	s.observeAlloc(context.Background(), "s1", stale)
	if s.allocs["s1"] != nil {
		t.Fatal("an allocation seen while its job was being purged was taken for the session's")
	}
	// The purge landed at index 100; the session is placed again.
	r.purging, r.purgedIndex, r.Placed = false, 100, true
	stopped := *stale
	stopped.clientStatus, stopped.desiredStatus, stopped.modifyIndex = nomad.AllocClientStatusComplete, nomad.AllocDesiredStatusStop, 110
	s.observeAlloc(context.Background(), "s1", &stopped)
	if s.allocs["s1"] != nil {
		t.Fatal("the purged registration's stopped allocation was taken for the session's")
	}
	fresh := &allocInfo{id: "a-new", clientStatus: nomad.AllocClientStatusRunning, desiredStatus: nomad.AllocDesiredStatusRun, createIndex: 120, modifyIndex: 120}
	s.observeAlloc(context.Background(), "s1", fresh)
	if s.allocs["s1"] != fresh {
		t.Fatal("the new registration's allocation was not recorded")
	}
}
