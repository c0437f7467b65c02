package scheduler

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
	consul "github.com/hashicorp/consul/api"
	nomad "github.com/hashicorp/nomad/api"
	"golang.org/x/sync/errgroup"

	"github.com/metal-stream/metal/internal/token"
	"github.com/metal-stream/metal/jobs"
)

// Config configures the scheduler.
type Config struct {
	// Capacity optionally bounds how many sessions one edge holds at once;
	// 0 means no bound. How many fit is always what Nomad can place
	// (room.go): node resources, encoder slots and live allocations.
	Capacity int
	// QueueBound is how many sessions may wait beyond what is placed; more
	// get ErrQueueFull (the gateway answers 429).
	QueueBound int
	// Datacenter to place streams in; Datacenters, when set, are the edges
	// a session may be placed in (the first is the default).
	Datacenter  string
	Datacenters []string
	// Failover is "auto" (a session whose edge dies is replaced on the
	// next-nearest edge at once) or "click" (the player asks for it).
	Failover string
	// Namespace for session jobs and their keys; empty uses the Nomad
	// client's (NOMAD_NAMESPACE).
	Namespace string
	// JobHCL is jobs/streamer.nomad.hcl; JobVars are its variables beyond
	// session_id and datacenter (driver, metal_binary, gpu, ...).
	JobHCL  string
	JobVars map[string]any
	// JobPrefix names session jobs: JobPrefix + session id.
	JobPrefix string
	// KVPrefix is where session records live in Consul KV.
	KVPrefix string
	// ReapAfter stops a session that no browser has asked about (status or
	// progress stream) for this long and that has no connected peer; 0
	// disables it.
	ReapAfter time.Duration
	// KeepEnded is how long an ended session's record stays readable.
	KeepEnded time.Duration
	// SweepEvery is how often Nomad's session jobs and keys are reconciled
	// with the session records (reconcile.go); 0 disables it.
	SweepEvery time.Duration
	// MasterKey derives each session's token key (token.DeriveKey).
	MasterKey []byte
	// Instance names this gateway among its peers (the leader lock's
	// value, its lock check); empty uses host name and process id.
	Instance string
}

// DefaultConfig returns the defaults the README documents.
func DefaultConfig() Config {
	return Config{
		QueueBound: 10,
		Datacenter: "dc1",
		Failover:   "auto",
		JobPrefix:  "metal-session-",
		KVPrefix:   "metal/sessions/",
		ReapAfter:  60 * time.Second,
		KeepEnded:  2 * time.Minute,
		SweepEvery: 30 * time.Second,
	}
}

// allocInfo is the latest allocation of a session job.
type allocInfo struct {
	id            string
	clientStatus  string
	desiredStatus string
	node          string
	nodeID        string
	failure       string // why the streamer task failed, from its events
	modifyIndex   uint64
	createIndex   uint64
}

// requeueBackoff bounds how soon a session Nomad refused is offered to it
// again when no room has appeared since (roomGen unchanged).
const (
	requeueBackoffMin = 2 * time.Second
	requeueBackoffMax = 30 * time.Second
)

// Scheduler places and follows sessions. Create it with New and run it.
type Scheduler struct {
	cfg    Config
	log    *slog.Logger
	nomad  *nomad.Client
	consul *consul.Client
	store  *store

	admitMu sync.Mutex // serialises Enqueue, so bounds hold under a flood

	mu        sync.Mutex
	records   map[string]*record
	allocs    map[string]*allocInfo
	endpoints map[string]Endpoint
	// lastEP is the last endpoint of a live session whose Consul check left
	// passing: the probe keeps trying it, and fails the session over when
	// it stays unreachable (probe.go).
	lastEP    map[string]Endpoint
	lastSeen  map[string]time.Time
	asked     map[string]time.Time // when a browser last asked this gateway (seen.go)
	watchers  map[string]int
	probeFail map[string]int
	// critical is when each live session's Consul check went critical
	// (watchCriticalLocked).
	critical map[string]time.Time
	failing  sync.Map // sessions being failed over
	// stray is how many session jobs Nomad holds that the records do not
	// count (stray.go); strayLogged, which were logged.
	stray       int
	strayLogged map[string]bool

	// What Nomad can still place (room.go): schedulable nodes by id, live
	// allocations by id (every job's), the room per edge derived from them,
	// a counter bumped whenever some edge's room grows, and what one
	// session reserves.
	nodes       map[string]nodeRoom
	usage       map[string]allocUse
	room        map[string]int
	roomGen     uint64
	demand      demand
	demandKnown bool
	allocsSeen  bool
	readyNodes  map[string]int
	nodesSeen   bool
	turn        map[string]turnState
	consulOrder []string

	changed chan struct{}
	loaded  bool

	kick chan struct{}

	// runCtx is Run's context: work that must outlive one watch (a purge
	// started from the event stream) runs under it.
	runCtx context.Context

	// leadCtx is live while this gateway holds the leader lock with
	// leadSession (leader.go).
	leadCtx     context.Context
	leadSession string
	leaderSeen  bool // some gateway held the lock since start (Ready)

	// nomadDown is set while Nomad does not answer (its watches fail):
	// admissions get ErrUnavailable instead of sessions that would fail.
	nomadDown atomic.Bool

	metrics *schedMetrics
}

// New builds a scheduler; Run loads state from Consul and Nomad and starts
// following them.
func New(cfg Config, nc *nomad.Client, cc *consul.Client, log *slog.Logger) (*Scheduler, error) {
	if cfg.Capacity < 0 || cfg.QueueBound < 0 {
		return nil, errors.New("scheduler: capacity and queue bound must not be negative")
	}
	if cfg.JobHCL == "" {
		return nil, errors.New("scheduler: no streamer job specification")
	}
	if len(cfg.MasterKey) < token.MinKeyLen {
		return nil, fmt.Errorf("scheduler: master key: %w", token.ErrShortKey)
	}
	if log == nil {
		log = slog.Default()
	}
	if cfg.Instance == "" {
		host, _ := os.Hostname()
		cfg.Instance = fmt.Sprintf("%s-%d", host, os.Getpid())
	}
	s := &Scheduler{
		cfg: cfg, log: log.With("component", "scheduler"), nomad: nc, consul: cc,
		store:   &store{kv: cc.KV(), txn: cc.Txn(), prefix: cfg.KVPrefix},
		records: map[string]*record{}, allocs: map[string]*allocInfo{},
		endpoints: map[string]Endpoint{}, lastEP: map[string]Endpoint{}, lastSeen: map[string]time.Time{}, asked: map[string]time.Time{}, watchers: map[string]int{},
		probeFail: map[string]int{}, critical: map[string]time.Time{}, strayLogged: map[string]bool{}, readyNodes: map[string]int{}, turn: map[string]turnState{},
		nodes: map[string]nodeRoom{}, usage: map[string]allocUse{}, room: map[string]int{},
		changed: make(chan struct{}), kick: make(chan struct{}, 1),
	}
	s.metrics = newSchedMetrics(s)
	return s, nil
}

// JobID is the Nomad job id of a session.
func (s *Scheduler) JobID(session string) string { return s.cfg.JobPrefix + session }

// SessionKey is the token key of a session's streamer.
func (s *Scheduler) SessionKey(session string) []byte {
	return token.DeriveKey(s.cfg.MasterKey, session)
}

// Run follows the shared session records in Consul KV, Nomad's event
// stream, node list and Consul's health, and campaigns for the leader lock;
// while it leads it also places, reaps and reconciles (leader.go). It
// returns when ctx ends.
func (s *Scheduler) Run(ctx context.Context) error {
	s.mu.Lock()
	s.runCtx = ctx
	s.mu.Unlock()
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return s.watchRecords(ctx) })
	// Allocations are matched to records: list them once the records are
	// in the view, or a restarted gateway would drop them.
	g.Go(func() error { return after(ctx, s.isLoaded, s.watchNomad) })
	g.Go(func() error { return s.watchConsul(ctx) })
	g.Go(func() error { return s.probeLoop(ctx, time.Second) })
	g.Go(func() error { return s.watchCapacity(ctx) })
	g.Go(func() error { return s.watchTURN(ctx) })
	g.Go(func() error { return s.publishSeen(ctx) })
	g.Go(func() error { return s.awaitLeader(ctx) })
	// Campaign once this gateway knows the state it would lead.
	g.Go(func() error { return after(ctx, s.viewReady, s.campaign) })
	return g.Wait()
}

// after runs f once cond holds (checked every 20 ms), unless ctx ends first.
func after(ctx context.Context, cond func() bool, f func(context.Context) error) error {
	for !cond() {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(20 * time.Millisecond):
		}
	}
	return f(ctx)
}

// Ready reports whether Run has loaded the stored sessions, knows what
// Nomad can place (a session's reservation, the nodes, the allocations)
// and has seen the fleet led once, so that an admission now is placed at
// once when there is room. It stays true while a new leader is elected.
func (s *Scheduler) Ready() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.loaded && s.demandKnown && s.nodesSeen && s.allocsSeen && s.leaderSeen
}

func (s *Scheduler) isLoaded() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.loaded
}

// viewReady is Ready before any leader was seen: what campaigning needs.
func (s *Scheduler) viewReady() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.loaded && s.demandKnown && s.nodesSeen && s.allocsSeen
}

// catchUp is a new leader's catch-up: a placement whose job was never
// registered (the last leader stopped in between) is registered now
// (create-only, so never twice); a job Nomad holds blocked goes back to the
// queue; an allocation that ended while no gateway led ends its session.
func (s *Scheduler) catchUp(ctx context.Context) {
	s.mu.Lock()
	var placed, ended []string
	observed := map[string]*allocInfo{}
	for id, r := range s.records {
		if r.Placed && r.Ended && !r.purged && (allocLive(s.allocs[id]) || time.Since(r.EndedAt) < endedHold) {
			ended = append(ended, id)
		}
		if r.Placed && !r.Ended {
			placed = append(placed, id)
			if a := s.allocs[id]; a != nil {
				c := *a
				observed[id] = &c
			}
		}
	}
	s.mu.Unlock()
	// Sessions that ended while this gateway followed, whose purge it never
	// saw and which may still hold a job: purging again is harmless ("job
	// not found" counts as gone) and frees their slots now rather than
	// after endedHold. In the background: the first placement does not
	// wait for it.
	if len(ended) > 0 {
		go func() {
			for _, id := range ended {
				if err := s.purgeJob(ctx, id); err != nil && ctx.Err() == nil {
					s.log.Warn("purge a session that ended before this gateway led", "session", id, "err", err) // the sweep retries
				}
			}
		}()
	}
	for _, id := range placed {
		if a := observed[id]; a != nil {
			s.act(ctx, id, a)
			continue
		}
		job, _, err := s.nomad.Jobs().Info(s.JobID(id), (&nomad.QueryOptions{AllowStale: true}).WithContext(ctx))
		if err != nil && isNotFound(err) {
			if err := s.place(ctx, id, false); err != nil {
				s.placeFailed(ctx, id, err)
			}
			continue
		}
		// A job Nomad is still holding blocked: its evaluations will not be
		// streamed again, so look now.
		if err == nil && job != nil {
			evals, _, err := s.nomad.Jobs().Evaluations(s.JobID(id), (&nomad.QueryOptions{AllowStale: true}).WithContext(ctx))
			if err == nil {
				for _, ev := range evals {
					if ev.Status == nomad.EvalStatusBlocked {
						s.requeue(ctx, id, ev.JobModifyIndex, refusal(ev))
						break
					}
				}
			}
		}
	}
	s.poke()
}

// notifyLocked wakes every Changed waiter. Call with s.mu held.
func (s *Scheduler) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// Changed returns a channel closed at the next change of any session.
func (s *Scheduler) Changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

func (s *Scheduler) poke() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Enqueue creates a session for player, or returns the player's live one
// (created false), whichever gateway created it. The session goes to the
// first edge in the player's order (lowest measured RTT first) with a free
// slot, or waits in the queue; only the leader places, so elsewhere it is
// queued and the leader places it moments later. It returns ErrQueueFull
// when every slot and the queue are taken, and ErrUnavailable while Nomad
// or Consul does not answer.
func (s *Scheduler) Enqueue(ctx context.Context, player string, prefs Prefs) (Status, bool, error) {
	if s.nomadDown.Load() {
		return Status{}, false, unavailable(errors.New("nomad does not answer"))
	}
	s.admitMu.Lock()
	defer s.admitMu.Unlock()
	return s.enqueueLocked(ctx, player, prefs, "", newSessionID())
}

// enqueueLocked is Enqueue under admitMu; replaces names the failed session
// a failover replaces, id the new session's id.
func (s *Scheduler) enqueueLocked(ctx context.Context, player string, prefs Prefs, replaces, id string) (Status, bool, error) {
	for attempt := 0; ; attempt++ {
		st, created, err := s.admit(ctx, player, prefs, replaces, id)
		if errors.Is(err, errClaimed) && attempt < 4 {
			continue // another gateway admitted this player just now: look again
		}
		return st, created, err
	}
}

func (s *Scheduler) admit(ctx context.Context, player string, prefs Prefs, replaces, id string) (Status, bool, error) {
	s.mu.Lock()
	live := 0
	for _, r := range s.records {
		if r.Ended {
			continue
		}
		if r.Player == player && r.ID != replaces {
			st := s.statusLocked(r)
			s.lastSeen[r.ID] = time.Now()
			s.mu.Unlock()
			return st, false, nil
		}
		live++
	}
	if live >= s.totalCapacityLocked()+s.cfg.QueueBound {
		s.mu.Unlock()
		return Status{}, false, ErrQueueFull
	}
	s.mu.Unlock()
	// The player's claim says which session is theirs across gateways,
	// including one this view has not seen yet.
	c, err := s.store.getClaim(ctx, player)
	if err != nil {
		s.consulError("read player claim", err)
		return Status{}, false, err
	}
	if c.session != "" && c.session != replaces {
		other, err := s.store.get(ctx, c.session)
		if err != nil {
			return Status{}, false, err
		}
		if other != nil && !other.Ended {
			s.mu.Lock()
			s.adoptLocked(other, false, time.Now())
			st := s.statusLocked(s.records[other.ID])
			s.lastSeen[other.ID] = time.Now()
			s.notifyLocked()
			s.mu.Unlock()
			return st, false, nil
		}
	}
	// The leader may place in the request, when there is room and nobody
	// waits: it reads the queue's tail, then every record, consistently, so
	// that the decision sees everyone admitted before (at any gateway), and
	// the write checks the tail has not moved since.
	var tail uint64
	leading := s.Leading()
	if leading {
		s.mu.Lock()
		order, _ := s.orderLocked(prefs)
		leading = s.freeEdgeLocked(order, s.activeLocked(), s.inflightLocked()) != "" && !s.anyQueuedLocked()
		s.mu.Unlock()
	}
	if leading {
		s.countStray(ctx) // what Nomad holds, as the placement loop reads it
		if tail, err = s.store.tail(ctx); err == nil {
			var recs []*record
			var idx uint64
			if recs, idx, err = s.store.list(ctx, 0, true); err == nil {
				s.adoptAll(recs, idx)
			}
		}
		if err != nil {
			leading = false // cannot tell: queue it, the leader's loop places it
		}
	}
	s.mu.Lock()
	order, why := s.orderLocked(prefs)
	r := &record{ID: id, Player: player, Created: time.Now().UTC(), Prefs: order, Choice: why,
		RTT: prefs.RTT, Avoid: prefs.Avoid, Replaces: replaces, creating: true}
	// The record is in the view (holding its slot) from here, before the
	// store answers.
	if dc := s.freeEdgeLocked(order, s.activeLocked(), s.inflightLocked()); leading && dc != "" && !s.anyQueuedLocked() {
		r.Placed, r.Datacenter, r.placeStart = true, dc, time.Now()
		if dc != order[0] {
			r.Choice = fmt.Sprintf("%s is full; next in the player's order", order[0])
		}
	}
	s.records[r.ID] = r
	s.lastSeen[r.ID] = time.Now()
	rc := *r // the store works on a copy; the view changes under s.mu
	s.mu.Unlock()
	var f *fence
	if rc.Placed {
		if f = s.fence(); f == nil {
			rc.Placed, rc.Datacenter = false, ""
		}
	}
	err = s.store.create(ctx, &rc, c, f, tail)
	if rc.Placed && (errors.Is(err, ErrNotLeader) || errors.Is(err, errOvertaken)) {
		// Lost the lock, or someone was admitted meanwhile: queue it.
		rc.Placed, rc.Datacenter = false, ""
		err = s.store.create(ctx, &rc, c, nil, 0)
	}
	s.mu.Lock()
	if err != nil {
		delete(s.records, r.ID)
		delete(s.lastSeen, r.ID)
		s.mu.Unlock()
		if errors.Is(err, ErrUnavailable) {
			s.consulError("store session", err)
			// The answer may have been lost after the commit: if the record
			// is there, placed, register its job (create-only, so never
			// twice); queued, placeLoop has it.
			if rc.Placed {
				go s.placeIfStored(rc.ID)
			}
		}
		return Status{}, false, err
	}
	if r.modifyIndex < rc.modifyIndex {
		// Unless the watch has already brought a newer version (the
		// leader placed it meanwhile): the view never goes back.
		r.Placed, r.Datacenter = rc.Placed, rc.Datacenter
		r.createIndex, r.modifyIndex = rc.createIndex, rc.modifyIndex
	}
	r.creating = false
	s.notifyLocked()
	s.mu.Unlock()
	if rc.Placed {
		// The placement outlives the request (a player who hangs up must
		// not leave a half-placed session, nor look like a Nomad outage),
		// but not a Nomad that hangs: admissions wait behind it.
		pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
		if err := s.place(pctx, rc.ID, false); err != nil {
			s.placeFailed(context.WithoutCancel(ctx), rc.ID, err)
		}
		cancel()
	}
	s.mu.Lock()
	st := s.statusLocked(r)
	s.mu.Unlock()
	s.log.Info("session admitted", "session", rc.ID, "player", player, "state", st.State)
	s.poke()
	return st, true, nil
}

// Get returns a session's status. A session this gateway's view does not
// hold yet (admitted at another gateway a moment ago) is read from KV.
func (s *Scheduler) Get(id string) (Status, error) {
	s.mu.Lock()
	r, ok := s.records[id]
	if ok {
		defer s.mu.Unlock()
		return s.statusLocked(r), nil
	}
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	got, err := s.store.get(ctx, id)
	if err != nil {
		// Consul away (a leader election): the session may well exist, so
		// not a 404 but an outage the caller retries.
		return Status{}, unavailable(err)
	}
	if got == nil {
		return Status{}, ErrNotFound
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.adoptLocked(got, false, time.Now())
	return s.statusLocked(s.records[id]), nil
}

// SessionsOf lists the live sessions of player.
func (s *Scheduler) SessionsOf(player string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for id, r := range s.records {
		if r.Player == player && !r.Ended {
			out = append(out, id)
		}
	}
	return out
}

// Touch records that a browser asked about the session (it is wanted).
func (s *Scheduler) Touch(id string) {
	s.mu.Lock()
	if _, ok := s.records[id]; ok {
		s.lastSeen[id], s.asked[id] = time.Now(), time.Now()
	}
	s.mu.Unlock()
}

// Watch records that a browser follows the session's progress; the session
// is not reaped until release is called (and ReapAfter has passed since).
func (s *Scheduler) Watch(id string) (release func()) {
	s.mu.Lock()
	s.watchers[id]++
	s.lastSeen[id], s.asked[id] = time.Now(), time.Now()
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		if s.watchers[id]--; s.watchers[id] <= 0 {
			delete(s.watchers, id)
		}
		if _, ok := s.records[id]; ok {
			s.lastSeen[id], s.asked[id] = time.Now(), time.Now()
		}
		s.mu.Unlock()
	}
}

// Stop ends a session: its job is stopped and purged, its key deleted.
func (s *Scheduler) Stop(ctx context.Context, id, reason string) error {
	s.mu.Lock()
	_, ok := s.records[id]
	s.mu.Unlock()
	if !ok {
		return ErrNotFound
	}
	return s.finish(ctx, id, false, reason, "")
}

func (s *Scheduler) purgeJob(ctx context.Context, id string) error {
	var errs []error
	_, wm, err := s.nomad.Jobs().Deregister(s.JobID(id), true, (&nomad.WriteOptions{}).WithContext(ctx))
	if err != nil && !isNotFound(err) {
		errs = append(errs, fmt.Errorf("purge job %s: %w", s.JobID(id), err))
	}
	if err == nil && wm != nil {
		s.mu.Lock()
		if r, ok := s.records[id]; ok {
			r.purgedIndex = max(r.purgedIndex, wm.LastIndex)
		}
		s.mu.Unlock()
	}
	if _, err := s.nomad.Variables().Delete("nomad/jobs/"+s.JobID(id), (&nomad.WriteOptions{}).WithContext(ctx)); err != nil && !isNotFound(err) {
		errs = append(errs, fmt.Errorf("delete key of %s: %w", id, err))
	}
	if len(errs) == 0 {
		s.mu.Lock()
		if r, ok := s.records[id]; ok && r.Ended {
			r.purged = true
			s.poke() // its slot is free now
		}
		s.mu.Unlock()
	}
	return errors.Join(errs...)
}

// statusLocked derives a session's state. Call with s.mu held.
func (s *Scheduler) statusLocked(r *record) Status {
	st := Status{ID: r.ID, Player: r.Player, Created: r.Created, Datacenter: r.Datacenter, RTT: r.RTT, Choice: r.Choice,
		Replacement: r.Replacement, Replaces: r.Replaces}
	a := s.allocs[r.ID]
	if a != nil {
		st.Node = a.node
	}
	switch {
	case r.Ended && r.Failed:
		st.State, st.Reason = StateFailed, r.Reason
	case r.Ended:
		st.State, st.Reason = StateEnded, r.Reason
	case !r.Placed:
		st.State, st.Position, st.Reason = StateQueued, s.positionLocked(r), ReasonWaitingGPU
	case a == nil:
		st.State = StatePlacing
	default:
		ep, ok := s.endpoints[r.ID]
		switch {
		case ok && a.clientStatus == nomad.AllocClientStatusRunning && ep.Peers > 0:
			st.State = StateConnected
		case ok && a.clientStatus == nomad.AllocClientStatusRunning:
			st.State = StateReady
		default:
			st.State = StateStarting
		}
		if ok {
			e := ep
			st.Endpoint, st.Encoder = &e, ep.Encoder
		}
	}
	return st
}

func (s *Scheduler) positionLocked(r *record) int {
	pos := 1
	for _, o := range s.records {
		// A record still being admitted has no CreateIndex yet: counting
		// it would move everyone back one place at this gateway only.
		if !o.Ended && !o.Placed && !o.creating && o.createIndex < r.createIndex {
			pos++
		}
	}
	return pos
}

// placeLoop places queued sessions, oldest first, while there is room. It
// runs while this gateway leads.
func (s *Scheduler) placeLoop(ctx context.Context) error {
	var hold *time.Timer // wakes the loop when a time-held slot frees (holdEndsLocked)
	defer func() {
		if hold != nil {
			hold.Stop()
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.kick:
		}
		// A consistent read first: the oldest waiting session is in it,
		// whichever gateway admitted it, so nobody is overtaken.
		if recs, idx, err := s.store.list(ctx, 0, true); err == nil {
			s.adoptAll(recs, idx)
		} else if ctx.Err() == nil {
			s.consulError("read the queue", err)
			time.AfterFunc(time.Second, s.poke)
			continue
		}
		s.countStray(ctx)
		for ctx.Err() == nil {
			r := s.nextToPlace()
			if r == nil {
				break
			}
			if err := s.place(ctx, r.ID, true); err != nil {
				s.placeFailed(ctx, r.ID, err)
				if errors.Is(err, ErrNotLeader) {
					return nil // the lock is gone: lead() ends
				}
			}
		}
		s.gcEnded(ctx)
		s.mu.Lock()
		d := s.holdEndsLocked()
		s.mu.Unlock()
		if d > 0 {
			if hold == nil {
				hold = time.AfterFunc(d+10*time.Millisecond, s.poke)
			} else {
				hold.Reset(d + 10*time.Millisecond)
			}
		}
	}
}

// placeFailed handles a placement that did not happen: lost leadership or
// an outage (Nomad or Consul not answering) sends the session back to the
// front of the queue, to be tried again after a backoff; anything else
// (Nomad refused the job outright) fails it.
func (s *Scheduler) placeFailed(ctx context.Context, id string, err error) {
	switch {
	case errors.Is(err, ErrNotLeader), ctx.Err() != nil:
		_ = s.refresh(context.WithoutCancel(ctx), id) // the next leader places it
	case errors.Is(err, ErrUnavailable):
		s.log.Warn("placement deferred: cluster unavailable", "session", id, "err", err)
		s.unplace(ctx, id, "the cluster did not answer")
		s.backOff(id) // also when the failed write already left it queued
	default:
		s.log.Error("place session", "session", id, "err", err)
		s.fail(ctx, id, "placement failed: "+err.Error())
	}
}

// anyQueuedLocked reports whether some session waits for a slot.
func (s *Scheduler) anyQueuedLocked() bool {
	for _, r := range s.records {
		if !r.Ended && !r.Placed {
			return true
		}
	}
	return false
}

// nextToPlace takes the oldest queued session that has a free slot on one of
// its edges, and reserves that slot. A session that Nomad refused and that
// waits for room to appear (or for its backoff) holds its edges: nobody
// behind it in the queue is placed there first.
func (s *Scheduler) nextToPlace() *record {
	s.mu.Lock()
	defer s.mu.Unlock()
	var queue []*record
	for _, r := range s.records {
		if !r.Ended && !r.Placed {
			queue = append(queue, r)
		}
	}
	sort.Slice(queue, func(i, j int) bool { return queue[i].createIndex < queue[j].createIndex })
	active, inflight := s.activeLocked(), s.inflightLocked() // unchanged until a slot is reserved
	held := map[string]bool{}
	// A session Nomad refused before and that is placed again on trial
	// (registered, no allocation yet) holds its edge until Nomad answers:
	// the room count was wrong there once, so nobody behind it is sent to
	// the same edge on the strength of it.
	for id, r := range s.records {
		if r.Placed && !r.Ended && r.refusals > 0 && s.allocs[id] == nil {
			held[r.Datacenter] = true
		}
	}
	now := time.Now()
	for _, r := range queue {
		order := r.Prefs
		if len(order) == 0 {
			order, r.Choice = s.orderLocked(Prefs{RTT: r.RTT, Avoid: r.Avoid})
		}
		if r.creating {
			continue
		}
		if r.purging || (r.refusedGen == s.roomGen && now.Before(r.retryAt)) {
			for _, dc := range order {
				held[dc] = true
			}
			continue
		}
		var open []string
		for _, dc := range order {
			if !held[dc] {
				open = append(open, dc)
			}
		}
		if dc := s.freeEdgeLocked(open, active, inflight); dc != "" {
			// Reserve the slot in the view: it counts against the room from
			// here, before place() stores it and calls Nomad.
			r.Placed, r.Datacenter, r.placeStart = true, dc, time.Now()
			s.notifyLocked()
			return r
		}
	}
	return nil
}

// freeEdgeLocked is the first edge of order with a free slot, or "", given
// the placed sessions by edge and those not yet seen as allocations.
func (s *Scheduler) freeEdgeLocked(order []string, active, inflight map[string]int) string {
	for _, dc := range order {
		if s.freeLocked(dc, active, inflight) > 0 {
			return dc
		}
	}
	return ""
}

// requeue sends a placed session whose job Nomad cannot place (a blocked
// evaluation, or failed allocations on its evaluation) back to the queue.
// jobIndex is the registration the evaluation was for: evaluations of a
// registration already refused, or older than the current one, change
// nothing. Only the leader acts.
func (s *Scheduler) requeue(ctx context.Context, id string, jobIndex uint64, why string) {
	if !s.Leading() {
		return
	}
	s.mu.Lock()
	r, ok := s.records[id]
	if !ok || r.Ended || !r.Placed || s.allocs[id] != nil || jobIndex < r.jobIndex ||
		(r.refusedIndex != 0 && jobIndex <= r.refusedIndex) {
		s.mu.Unlock()
		return
	}
	r.refusedIndex = max(jobIndex, r.jobIndex)
	s.mu.Unlock()
	s.unplace(ctx, id, "Nomad could not place it ("+why+")")
}

// unplace sends a placed session back to the queue: its job and key are
// purged, so Nomad never holds a blocked session job, and it keeps its place
// at the front of the queue (its record's CreateIndex). It is offered to
// Nomad again as soon as some edge's room grows, or after a backoff.
func (s *Scheduler) unplace(ctx context.Context, id, why string) {
	s.mu.Lock()
	r, ok := s.records[id]
	if !ok || r.Ended || !r.Placed {
		s.mu.Unlock()
		return
	}
	r.Placed, r.Datacenter, r.purging = false, "", true
	r.jobIndex = 0
	wait := r.holdBack(s.roomGen, time.Now())
	r.Choice = why + "; waiting for room"
	s.notifyLocked()
	runCtx := s.runCtx
	s.mu.Unlock()
	if runCtx == nil {
		runCtx = context.WithoutCancel(ctx)
	}
	s.log.Info("session back in the queue", "session", id, "why", why, "retry_in", wait)
	// The purge must outlive the event stream that saw the refusal (it
	// reconnects at will), so it runs under Run's context.
	go func() {
		b := backoff.NewExponentialBackOff()
		b.MaxInterval, b.MaxElapsedTime = 5*time.Second, 0
		// Queued in KV first (fenced: only while leading), then the job
		// goes: a gateway that lost the lock never purges a job the new
		// leader counts as placed.
		stored := false
		for {
			err := error(nil)
			if !stored {
				if err = s.storeQueued(runCtx, id); err == nil {
					stored = true
				}
			}
			if stored {
				// Only while this gateway still leads and the session still
				// waits: a new leader may have placed it again since.
				s.mu.Lock()
				cur, ok := s.records[id]
				still := ok && !cur.Placed && !cur.Ended
				s.mu.Unlock()
				if s.fence() == nil || !still {
					break
				}
				err = s.purgeJob(runCtx, id)
			}
			if errors.Is(err, ErrNotLeader) {
				_ = s.refresh(runCtx, id) // the view follows KV again
				break
			}
			if err == nil || runCtx.Err() != nil {
				break
			}
			s.log.Warn("purge refused session job; retrying", "session", id, "err", err)
			sleep(runCtx, b.NextBackOff())
		}
		s.mu.Lock()
		if r, ok := s.records[id]; ok {
			r.purging = false
		}
		s.mu.Unlock()
		s.poke()
	}()
	time.AfterFunc(wait, s.poke) // the backoff ends even if nothing else happens
}

// storeQueued stores a requeued session as waiting, unless it has ended
// since. The write is fenced: only the leader changes placements.
func (s *Scheduler) storeQueued(ctx context.Context, id string) error {
	_, err := s.update(ctx, id, true, func(r *record) bool {
		if r.Ended {
			return false
		}
		r.Placed, r.Datacenter = false, ""
		return true
	})
	if errors.Is(err, errUnchanged) || errors.Is(err, ErrNotFound) {
		return nil
	}
	return err
}

// place stores the session as placed (with persist; a fenced write, so only
// the leader places), writes its key into a Nomad variable only its job can
// read, then registers the job. Registration is create-only (EnforceIndex
// with index 0), so a retried placement never places twice.
func (s *Scheduler) place(ctx context.Context, id string, persist bool) error {
	if persist {
		s.mu.Lock()
		var dc string
		if r := s.records[id]; r != nil {
			dc = r.Datacenter
		}
		s.mu.Unlock()
		_, err := s.update(ctx, id, true, func(r *record) bool {
			if r.Ended {
				return false
			}
			r.Placed = true
			if r.Datacenter == "" {
				r.Datacenter = dc
			}
			return true
		})
		if errors.Is(err, errUnchanged) || errors.Is(err, ErrNotFound) {
			return nil // ended meanwhile (the player left)
		}
		if err != nil {
			return err
		}
	}
	s.mu.Lock()
	cur := s.records[id]
	if cur == nil || cur.Ended || !cur.Placed {
		s.mu.Unlock()
		return nil
	}
	r := *cur
	s.mu.Unlock()
	jobID := s.JobID(id)
	if _, _, err := s.nomad.Variables().Create(&nomad.Variable{
		Path:  "nomad/jobs/" + jobID,
		Items: nomad.VariableItems{"token_key": string(s.SessionKey(id))},
	}, (&nomad.WriteOptions{}).WithContext(ctx)); err != nil {
		return s.nomadErr(fmt.Errorf("write session key: %w", err))
	}
	job, err := s.jobFor(ctx, &r)
	if err != nil {
		return s.nomadErr(err)
	}
	resp, _, err := s.nomad.Jobs().RegisterOpts(job, &nomad.RegisterOptions{EnforceIndex: true, ModifyIndex: 0},
		(&nomad.WriteOptions{}).WithContext(ctx))
	if err != nil && !strings.Contains(err.Error(), "job already exists") {
		return s.nomadErr(fmt.Errorf("register job %s: %w", jobID, err))
	}
	if resp != nil {
		s.mu.Lock()
		if cur := s.records[id]; cur != nil {
			cur.jobIndex = resp.JobModifyIndex
		}
		s.mu.Unlock()
	}
	// The session may have been stopped while its job was being registered;
	// then Stop's purge may have come first, and this one must follow.
	s.mu.Lock()
	ended := s.records[id] == nil || s.records[id].Ended
	s.mu.Unlock()
	if ended {
		return s.purgeJob(context.WithoutCancel(ctx), id)
	}
	s.log.Info("session placed", "session", id, "job", jobID)
	return nil
}

// jobFor renders jobs/streamer.nomad.hcl for a session through Nomad's own
// parser and names the job after the session.
func (s *Scheduler) jobFor(ctx context.Context, r *record) (*nomad.Job, error) {
	vars := map[string]any{"session_id": r.ID, "datacenter": r.Datacenter}
	for k, v := range s.cfg.JobVars {
		vars[k] = v
	}
	text, err := jobs.RenderVars(vars)
	if err != nil {
		return nil, err
	}
	job, err := s.nomad.Jobs().ParseHCLOpts(&nomad.JobsParseRequest{JobHCL: s.cfg.JobHCL, Variables: text, Canonicalize: true})
	if err != nil {
		return nil, fmt.Errorf("parse streamer job: %w", err)
	}
	id := s.JobID(r.ID)
	job.ID, job.Name = &id, &id
	if s.cfg.Namespace != "" {
		job.Namespace = &s.cfg.Namespace
	}
	if job.Meta == nil {
		job.Meta = map[string]string{}
	}
	job.Meta["session"], job.Meta["player"] = r.ID, r.Player
	return job, nil
}

// failover ends a session whose edge failed it and, with Failover "auto",
// places a replacement for the same player on the next-nearest edge. cause
// labels the failover metric.
func (s *Scheduler) failover(ctx context.Context, id, reason string) {
	// Two signals (the probe, the Consul check, an allocation event) may
	// fail the same session over at once: one acts, the other finds it
	// ended afterwards.
	if _, busy := s.failing.LoadOrStore(id, true); busy {
		return
	}
	defer s.failing.Delete(id)
	s.mu.Lock()
	r, ok := s.records[id]
	if !ok || r.Ended {
		s.mu.Unlock()
		return
	}
	old := *r
	// A chain of replacements that keep failing (a streamer that crashes
	// wherever it runs) stops after maxFailovers.
	chain := 0
	for prev := old.Replaces; prev != "" && chain < maxFailovers; chain++ {
		p, ok := s.records[prev]
		if !ok {
			break
		}
		prev = p.Replaces
	}
	s.mu.Unlock()
	s.metrics.failovers.WithLabelValues(failoverCause(reason)).Inc()
	if s.cfg.Failover != "auto" || chain >= maxFailovers {
		s.fail(ctx, id, reason)
		return
	}
	s.admitMu.Lock()
	defer s.admitMu.Unlock()
	// Create the replacement first, so that it exists when the player learns
	// of it, then end the old session naming it, in one change.
	avoid := append(slices.Clone(old.Avoid), old.Datacenter)
	st, _, err := s.enqueueLocked(ctx, old.Player, Prefs{RTT: old.RTT, Avoid: avoid}, id, newSessionID())
	if err != nil {
		s.log.Error("failover", "session", id, "err", err)
		s.fail(ctx, id, reason)
		return
	}
	if err := s.finish(ctx, id, true, reason, st.ID); err != nil {
		s.log.Error("end failed session", "session", id, "err", err)
	}
	s.log.Info("session failed over", "from", id, "to", st.ID, "edge", st.Datacenter, "state", st.State)
}

// placeIfStored registers the job of a session whose placed record was
// stored although the store's answer was lost.
func (s *Scheduler) placeIfStored(id string) {
	s.mu.Lock()
	runCtx := s.runCtx
	s.mu.Unlock()
	if runCtx == nil {
		return
	}
	for try := 0; try < 10 && runCtx.Err() == nil; try++ {
		sleep(runCtx, time.Second)
		if err := s.refresh(runCtx, id); err != nil {
			continue // Consul still away
		}
		s.mu.Lock()
		r, ok := s.records[id]
		placed := ok && r.Placed && !r.Ended
		s.mu.Unlock()
		if placed && s.Leading() {
			if err := s.place(runCtx, id, false); err != nil {
				s.placeFailed(runCtx, id, err)
			}
		}
		return
	}
}

// backOff holds a queued session back for its requeue backoff, so a
// placement that keeps failing (Consul away) is not retried in a tight
// loop; it does nothing while a backoff already runs.
func (s *Scheduler) backOff(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	r, ok := s.records[id]
	if !ok || r.Placed || r.Ended || now.Before(r.retryAt) {
		return
	}
	time.AfterFunc(r.holdBack(s.roomGen, now), s.poke)
}

// purgeLater retries a session's purge in the background, with backoff,
// until it succeeds or Run ends.
func (s *Scheduler) purgeLater(id string) {
	s.mu.Lock()
	runCtx := s.runCtx
	s.mu.Unlock()
	if runCtx == nil {
		return
	}
	go func() {
		b := backoff.NewExponentialBackOff()
		b.InitialInterval, b.MaxInterval, b.MaxElapsedTime = 250*time.Millisecond, 5*time.Second, 0
		for runCtx.Err() == nil {
			sleep(runCtx, b.NextBackOff())
			if err := s.purgeJob(runCtx, id); err == nil {
				s.log.Info("purged after retrying", "session", id)
				s.poke()
				return
			}
		}
	}()
}

// maxFailovers is how many replacements in a row a player gets before the
// session simply fails.
const maxFailovers = 3

// failoverCause is the metric label of a failover reason (without the
// detail a crashed streamer's reason carries).
func failoverCause(reason string) string {
	for _, c := range []string{ReasonNodeLost, ReasonEdgeLost, ReasonUnhealthy, ReasonStreamerCrashed} {
		if strings.HasPrefix(reason, c) {
			return c
		}
	}
	return "other"
}

// fail ends a session as failed with reason.
func (s *Scheduler) fail(ctx context.Context, id, reason string) {
	if err := s.finish(ctx, id, true, reason, ""); err != nil {
		s.log.Error("end failed session", "session", id, "err", err)
	}
}

// finish marks a session ended (or failed, naming its replacement if any),
// stores it and, if it was placed, purges its job and key. Ending an ended
// session does nothing. Any gateway may end a session.
func (s *Scheduler) finish(ctx context.Context, id string, failed bool, reason, replacement string) error {
	rc, err := s.update(ctx, id, false, func(r *record) bool {
		if r.Ended {
			return false
		}
		r.Ended, r.Failed, r.Reason, r.EndedAt = true, failed, reason, time.Now().UTC()
		if replacement != "" {
			r.Replacement = replacement
		}
		return true
	})
	if errors.Is(err, errUnchanged) || errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	s.log.Info("session over", "session", id, "failed", failed, "reason", reason)
	var errs []error
	if rc.Placed {
		// The purge outlives a request that asked for it; if it fails
		// (Nomad away), it is retried until it succeeds (and the leader's
		// sweep would find the job too).
		if err := s.purgeJob(context.WithoutCancel(ctx), id); err != nil {
			errs = append(errs, err)
			s.purgeLater(id)
		}
	}
	s.poke()
	return errors.Join(errs...)
}

// reapLoop stops sessions no browser asked any gateway about for ReapAfter
// and that have no connected browser, and forgets ended ones after
// KeepEnded. It runs while this gateway leads.
func (s *Scheduler) reapLoop(ctx context.Context) error {
	return every(ctx, time.Second, func() {
		for _, id := range s.idle(ctx, time.Now()) {
			if err := s.Stop(ctx, id, ReasonIdle); err != nil {
				s.log.Error("reap session", "session", id, "err", err)
			}
		}
		s.gcEnded(ctx)
	})
}

// idle lists the sessions to reap: unwatched and unconnected here, and not
// asked about at any other gateway either (seen.go).
func (s *Scheduler) idle(ctx context.Context, now time.Time) []string {
	if s.cfg.ReapAfter <= 0 {
		return nil
	}
	s.mu.Lock()
	var cands []string
	for id, r := range s.records {
		if r.Ended || r.creating {
			continue
		}
		if s.watchers[id] > 0 || s.statusLocked(r).State == StateConnected {
			s.lastSeen[id] = now
			continue
		}
		if now.Sub(s.lastSeen[id]) >= s.cfg.ReapAfter {
			cands = append(cands, id)
		}
	}
	s.mu.Unlock()
	var out []string
	for _, id := range cands {
		seen, err := s.seenElsewhere(ctx, id)
		if err != nil {
			continue // not sure: not now
		}
		s.mu.Lock()
		if seen.After(s.lastSeen[id]) {
			s.lastSeen[id] = seen
		}
		if now.Sub(s.lastSeen[id]) >= s.cfg.ReapAfter {
			out = append(out, id)
		}
		s.mu.Unlock()
	}
	return out
}

// gcEnded forgets ended sessions after KeepEnded: their records, claims and
// seen keys leave KV, and every gateway's view follows. Leader only.
func (s *Scheduler) gcEnded(ctx context.Context) {
	s.mu.Lock()
	var gone []record
	for _, r := range s.records {
		if r.Ended && time.Since(r.EndedAt) >= s.cfg.KeepEnded {
			gone = append(gone, *r)
		}
	}
	s.mu.Unlock()
	for _, r := range gone {
		if err := s.store.remove(ctx, &r, s.fence()); err != nil {
			if !errors.Is(err, ErrNotLeader) && !errors.Is(err, errConflict) {
				s.log.Error("forget session", "session", r.ID, "err", err)
			}
			continue
		}
		s.mu.Lock()
		s.forgetLocked(r.ID)
		s.notifyLocked()
		s.mu.Unlock()
	}
}

func newSessionID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// isNotFound reports whether Nomad said the thing is not there. Nomad v1.6
// answers a purge of a job that is already gone with 500 "job not found",
// not 404, so the message counts as much as the status.
func isNotFound(err error) bool {
	var ue nomad.UnexpectedResponseError
	if errors.As(err, &ue) && ue.StatusCode() == 404 {
		return true
	}
	return strings.Contains(strings.ToLower(err.Error()), "not found")
}
