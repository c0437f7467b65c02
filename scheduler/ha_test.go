package scheduler

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	consul "github.com/hashicorp/consul/api"

	"github.com/metal-stream/metal/internal/localcluster/clustertest"
)

// peer starts one more scheduler on cfg (same KV prefix: another gateway of
// the same fleet); stop ends it as a SIGTERM would.
func peer(t *testing.T, cfg Config, instance string) (*Scheduler, func()) {
	t.Helper()
	cfg.Instance = instance
	s, stop := startScheduler(t, cfg, clustertest.Cluster(t).Nomad)
	for !s.Ready() {
		time.Sleep(10 * time.Millisecond)
	}
	return s, stop
}

func waitFor(t *testing.T, what string, d time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestPeersShareOneQueue: two schedulers on one KV prefix, as two gateways.
// One leads; the other admits into the same queue, answers for sessions the
// leader created (and the reverse) with the same positions, never places,
// and holds a player to one session. When the leader stops, the other takes
// over within 5 s and places the queue.
func TestPeersShareOneQueue(t *testing.T) {
	var cfg Config
	a, stopA := newScheduler(t, func(c *Config) { c.Capacity, c.QueueBound = 1, 5; c.Instance = "gw-a"; cfg = *c })
	b, _ := peer(t, cfg, "gw-b")
	if !a.Leading() || b.Leading() {
		t.Fatalf("leading: a %v b %v, want a only", a.Leading(), b.Leading())
	}
	ctx := context.Background()
	first, created, err := b.Enqueue(ctx, "p1", Prefs{}) // admitted at the follower
	if err != nil || !created {
		t.Fatal(created, err)
	}
	// The leader places it (there is room); both views agree.
	waitState(t, a, first.ID, StateStarting)
	waitState(t, b, first.ID, StateStarting)
	var queued []Status
	for i, s := range []*Scheduler{a, b, a} {
		st, _, err := s.Enqueue(ctx, fmt.Sprintf("q%d", i), Prefs{})
		if err != nil || st.State != StateQueued {
			t.Fatalf("queued %d: %+v %v", i, st, err)
		}
		queued = append(queued, st)
	}
	for i, q := range queued {
		for _, s := range []*Scheduler{a, b} {
			waitFor(t, "positions agree", 5*time.Second, func() bool {
				st, err := s.Get(q.ID)
				return err == nil && st.Position == i+1
			})
		}
	}
	// One session per player, whichever gateway is asked.
	again, created, err := a.Enqueue(ctx, "p1", Prefs{})
	if err != nil || created || again.ID != first.ID {
		t.Fatalf("p1 again at the leader = %+v created=%v err=%v, want %s", again, created, err, first.ID)
	}
	// The follower never placed: Nomad holds one job, the leader's.
	if jobs := mustJobs(t); len(jobs) != 1 {
		t.Fatalf("jobs %v, want 1 (capacity)", jobs)
	}
	// A player stops at the follower; the freed slot goes to the head of
	// the queue, not to anyone else.
	if err := b.Stop(ctx, first.ID, ReasonStopped); err != nil {
		t.Fatal(err)
	}
	waitState(t, a, queued[0].ID, StateStarting)
	if st, _ := b.Get(queued[1].ID); st.State != StateQueued || st.Position != 1 {
		waitFor(t, "q1 first in b's view", 5*time.Second, func() bool {
			st, _ := b.Get(queued[1].ID)
			return st.State == StateQueued && st.Position == 1
		})
	}
	// The leader goes away: b leads within 5 s and places the next.
	stopped := time.Now()
	stopA()
	if err := b.Stop(ctx, queued[0].ID, ReasonStopped); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "b leads", 5*time.Second, b.Leading)
	t.Logf("b leads %v after a stopped", time.Since(stopped).Round(time.Millisecond))
	waitState(t, b, queued[1].ID, StateStarting)
	if jobs := mustJobs(t); len(jobs) > 1 {
		t.Fatalf("jobs %v after failover, want at most capacity 1", jobs)
	}
}

// TestFencedWritesNeedTheLock: a write fenced with a session that does not
// hold the lock is refused, so a gateway that lost the lock cannot place.
func TestFencedWritesNeedTheLock(t *testing.T) {
	s, _ := newScheduler(t, func(c *Config) { c.Capacity, c.QueueBound = 1, 5 })
	ctx := context.Background()
	st, _, err := s.Enqueue(ctx, "p", Prefs{})
	if err != nil {
		t.Fatal(err)
	}
	waitState(t, s, st.ID, StateStarting) // placed: nothing else writes it now
	s.mu.Lock()
	r := *s.records[st.ID]
	s.mu.Unlock()
	r.Placed = false
	stale := &fence{key: s.store.lockKey(), session: "00000000-0000-0000-0000-000000000000"}
	if err := s.store.update(ctx, &r, stale); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("fenced write with a stale session: %v, want ErrNotLeader", err)
	}
	if err := s.store.update(ctx, &r, s.fence()); err != nil {
		t.Fatalf("fenced write by the leader: %v", err)
	}
	// And a write against an old version loses the check-and-set.
	r.modifyIndex--
	if err := s.store.update(ctx, &r, nil); !errors.Is(err, errConflict) {
		t.Fatalf("write on an old version: %v, want errConflict", err)
	}
}

// TestCrashedStreamerIsReplaced: with failover auto, a streamer that dies
// on a healthy node is replaced by a new session for the same player.
func TestCrashedStreamerIsReplaced(t *testing.T) {
	marker := t.TempDir() + "/crashed"
	s, _ := newScheduler(t, func(c *Config) {
		c.JobVars["metal_binary"] = fakeStreamer(t, "if [ -e "+marker+" ]; then exec sleep 300; fi; touch "+marker+"; exit 3")
	})
	st, _, err := s.Enqueue(context.Background(), "p", Prefs{})
	if err != nil {
		t.Fatal(err)
	}
	got := waitState(t, s, st.ID, StateFailed)
	if got.Replacement == "" {
		t.Fatalf("crashed session %+v has no replacement", got)
	}
	waitState(t, s, got.Replacement, StateStarting)
}

// TestDeposedLeaderCannotPlace: a leader whose lock session Consul has
// invalidated (as when its check goes critical), and which has not noticed
// yet, cannot place: the fenced write is refused and no job is registered.
func TestDeposedLeaderCannotPlace(t *testing.T) {
	s, _ := newScheduler(t, func(c *Config) { c.Capacity, c.QueueBound = 1, 5 })
	ctx := context.Background()
	first, _, err := s.Enqueue(ctx, "first", Prefs{})
	if err != nil {
		t.Fatal(err)
	}
	waitState(t, s, first.ID, StateStarting)
	next, _, err := s.Enqueue(ctx, "next", Prefs{})
	if err != nil || next.State != StateQueued {
		t.Fatalf("next = %+v %v, want queued", next, err)
	}
	// The lock is lost behind the scheduler's back, and the placement
	// runs with the fence it still holds.
	f := s.fence()
	if f == nil {
		t.Fatal("not leading")
	}
	cc := clustertest.Cluster(t).Consul
	if _, err := cc.Session().Destroy(f.session, nil); err != nil {
		t.Fatal(err)
	}
	// Someone else takes the lock at once, so this scheduler cannot simply
	// win it back before it places.
	other, _, err := cc.Session().Create(&consul.SessionEntry{TTL: "30s", Behavior: consul.SessionBehaviorRelease}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = cc.Session().Destroy(other, nil) })
	waitFor(t, "the lock taken by someone else", 5*time.Second, func() bool {
		ok, _, err := cc.KV().Acquire(&consul.KVPair{Key: f.key, Session: other, Flags: consul.LockFlagValue}, nil)
		return err == nil && ok
	})
	s.mu.Lock()
	s.records[next.ID].Placed, s.records[next.ID].Datacenter = true, "dc1"
	s.mu.Unlock()
	if err := s.place(ctx, next.ID, true); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("place by a deposed leader: %v, want ErrNotLeader", err)
	}
	for _, j := range mustJobs(t) {
		if j == s.JobID(next.ID) {
			t.Fatal("a deposed leader registered a job")
		}
	}
}

// TestNoLeaderQueues: while no gateway holds the leader lock (here another
// Consul session holds it, as a gateway that hangs would), a gateway admits
// into the queue and never places, even with free room; once the lock is
// free it leads and places the queue.
func TestNoLeaderQueues(t *testing.T) {
	var cfg Config
	a, stopA := newScheduler(t, func(c *Config) { c.Capacity, c.QueueBound = 2, 5; c.Instance = "gw-a"; cfg = *c })
	lockKey := a.store.lockKey()
	stopA() // releases the lock
	kv := clustertest.Cluster(t).Consul
	sid, _, err := kv.Session().Create(&consul.SessionEntry{TTL: "30s", Behavior: consul.SessionBehaviorRelease}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _, _ = kv.Session().Destroy(sid, nil) }()
	waitFor(t, "the test takes the free lock", 10*time.Second, func() bool {
		ok, _, err := kv.KV().Acquire(&consul.KVPair{Key: lockKey, Session: sid, Flags: consul.LockFlagValue}, nil)
		return err == nil && ok
	})

	b, _ := peer(t, cfg, "gw-b")
	st, created, err := b.Enqueue(context.Background(), "p1", Prefs{})
	if err != nil || !created {
		t.Fatal(created, err)
	}
	if st.State != StateQueued {
		t.Fatalf("admitted with no leader: %s, want queued", st.State)
	}
	time.Sleep(3 * time.Second)
	if got, _ := b.Get(st.ID); got.State != StateQueued || b.Leading() {
		t.Fatalf("with the lock held elsewhere: state %s, leading %v; want queued, not leading", got.State, b.Leading())
	}
	if jobs := mustJobs(t); len(jobs) != 0 {
		t.Fatalf("a job was registered with no leader: %v", jobs)
	}

	if _, _, err := kv.KV().Release(&consul.KVPair{Key: lockKey, Session: sid, Flags: consul.LockFlagValue}, nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the gateway leads once the lock is free", 10*time.Second, b.Leading)
	waitState(t, b, st.ID, StateStarting)
}
