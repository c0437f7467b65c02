package scheduler

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
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
	failure       string // why the streamer task failed, from its events
	modifyIndex   uint64
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
	lastSeen  map[string]time.Time
	watchers  map[string]int
	probeFail map[string]int

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
	return &Scheduler{
		cfg: cfg, log: log.With("component", "scheduler"), nomad: nc, consul: cc,
		store:   &store{kv: cc.KV(), prefix: cfg.KVPrefix},
		records: map[string]*record{}, allocs: map[string]*allocInfo{},
		endpoints: map[string]Endpoint{}, lastSeen: map[string]time.Time{}, watchers: map[string]int{},
		probeFail: map[string]int{}, readyNodes: map[string]int{}, turn: map[string]turnState{},
		nodes: map[string]nodeRoom{}, usage: map[string]allocUse{}, room: map[string]int{},
		changed: make(chan struct{}), kick: make(chan struct{}, 1),
	}, nil
}

// JobID is the Nomad job id of a session.
func (s *Scheduler) JobID(session string) string { return s.cfg.JobPrefix + session }

// SessionKey is the token key of a session's streamer.
func (s *Scheduler) SessionKey(session string) []byte {
	return token.DeriveKey(s.cfg.MasterKey, session)
}

// Run loads every session from Consul KV, then follows Nomad's event stream
// and Consul's health, places queued sessions, and reaps, until ctx ends.
func (s *Scheduler) Run(ctx context.Context) error {
	s.mu.Lock()
	s.runCtx = ctx
	s.mu.Unlock()
	if err := s.load(ctx); err != nil {
		return err
	}
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return s.watchNomad(ctx) })
	g.Go(func() error { return s.watchConsul(ctx) })
	g.Go(func() error { return s.placeLoop(ctx) })
	g.Go(func() error { return s.reapLoop(ctx) })
	g.Go(func() error { return s.sweepLoop(ctx) })
	g.Go(func() error { return s.probeLoop(ctx, time.Second) })
	g.Go(func() error { return s.watchCapacity(ctx) })
	g.Go(func() error { return s.watchTURN(ctx) })
	return g.Wait()
}

// Ready reports whether Run has loaded the stored sessions and knows what
// Nomad can place (a session's reservation, the nodes, the allocations), so
// that an admission now is placed at once when there is room.
func (s *Scheduler) Ready() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.loaded && s.demandKnown && s.nodesSeen && s.allocsSeen
}

func (s *Scheduler) load(ctx context.Context) error {
	recs, _, err := s.store.list(ctx, 0)
	if err != nil {
		return err
	}
	s.mu.Lock()
	now := time.Now()
	for _, r := range recs {
		s.records[r.ID] = r
		s.lastSeen[r.ID] = now // a restarted gateway gives browsers a full reap period
	}
	s.loaded = true
	s.mu.Unlock()
	s.log.Info("loaded sessions", "count", len(recs))
	// A gateway that stopped between storing a placement and registering its
	// job finishes the job now (registration is create-only, so this never
	// places twice).
	for _, r := range recs {
		if !r.Placed || r.Ended {
			continue
		}
		job, _, err := s.nomad.Jobs().Info(s.JobID(r.ID), (&nomad.QueryOptions{AllowStale: true}).WithContext(ctx))
		if err != nil && isNotFound(err) {
			if err := s.place(ctx, r); err != nil {
				s.fail(ctx, r.ID, "placement failed: "+err.Error())
			}
			continue
		}
		// A job Nomad is still holding blocked from before the restart:
		// its evaluations will not be streamed again, so look now.
		if err == nil && job != nil {
			evals, _, err := s.nomad.Jobs().Evaluations(s.JobID(r.ID), (&nomad.QueryOptions{AllowStale: true}).WithContext(ctx))
			if err == nil {
				for _, ev := range evals {
					if ev.Status == nomad.EvalStatusBlocked {
						s.requeue(ctx, r.ID, ev.JobModifyIndex, refusal(ev))
						break
					}
				}
			}
		}
	}
	s.poke()
	return nil
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
// (created false). The session goes to the first edge in the player's
// order (lowest measured RTT first) with a free slot, or waits in the queue.
// It returns ErrQueueFull when every slot and the queue are taken.
func (s *Scheduler) Enqueue(ctx context.Context, player string, prefs Prefs) (Status, bool, error) {
	s.admitMu.Lock()
	defer s.admitMu.Unlock()
	return s.enqueueLocked(ctx, player, prefs, "", newSessionID())
}

// enqueueLocked is Enqueue under admitMu; replaces names the failed session
// a failover replaces, id the new session's id.
func (s *Scheduler) enqueueLocked(ctx context.Context, player string, prefs Prefs, replaces, id string) (Status, bool, error) {
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
	order, why := s.orderLocked(prefs)
	// With a free slot and nobody waiting the session is placed now, in the
	// request; otherwise it waits in the queue for placeLoop, behind every
	// player already waiting.
	r := &record{ID: id, Player: player, Created: time.Now().UTC(), Prefs: order, Choice: why,
		RTT: prefs.RTT, Avoid: prefs.Avoid, Replaces: replaces}
	if dc := s.freeEdgeLocked(order, s.activeLocked(), s.inflightLocked()); dc != "" && !s.anyQueuedLocked() {
		r.Placed, r.Datacenter = true, dc
		if dc != order[0] {
			r.Choice = fmt.Sprintf("%s is full; next in the player's order", order[0])
		}
	}
	s.mu.Unlock()
	if err := s.store.put(ctx, r); err != nil {
		return Status{}, false, err
	}
	s.mu.Lock()
	r.createIndex = uint64(time.Now().UnixNano()) // local order until the next load
	s.records[r.ID] = r
	s.lastSeen[r.ID] = time.Now()
	s.notifyLocked()
	s.mu.Unlock()
	if r.Placed {
		if err := s.place(ctx, r); err != nil {
			s.log.Error("place session", "session", r.ID, "err", err)
			s.fail(context.WithoutCancel(ctx), r.ID, "placement failed: "+err.Error())
		}
	}
	s.mu.Lock()
	st := s.statusLocked(r)
	s.mu.Unlock()
	s.log.Info("session admitted", "session", r.ID, "player", player, "state", st.State)
	s.poke()
	return st, true, nil
}

// Get returns a session's status.
func (s *Scheduler) Get(id string) (Status, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.records[id]
	if !ok {
		return Status{}, ErrNotFound
	}
	return s.statusLocked(r), nil
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
		s.lastSeen[id] = time.Now()
	}
	s.mu.Unlock()
}

// Watch records that a browser follows the session's progress; the session
// is not reaped until release is called (and ReapAfter has passed since).
func (s *Scheduler) Watch(id string) (release func()) {
	s.mu.Lock()
	s.watchers[id]++
	s.lastSeen[id] = time.Now()
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		if s.watchers[id]--; s.watchers[id] <= 0 {
			delete(s.watchers, id)
		}
		if _, ok := s.records[id]; ok {
			s.lastSeen[id] = time.Now()
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
	return s.finish(ctx, id, false, reason)
}

func (s *Scheduler) purgeJob(ctx context.Context, id string) error {
	var errs []error
	if _, _, err := s.nomad.Jobs().Deregister(s.JobID(id), true, (&nomad.WriteOptions{}).WithContext(ctx)); err != nil && !isNotFound(err) {
		errs = append(errs, fmt.Errorf("purge job %s: %w", s.JobID(id), err))
	}
	if _, err := s.nomad.Variables().Delete("nomad/jobs/"+s.JobID(id), (&nomad.WriteOptions{}).WithContext(ctx)); err != nil && !isNotFound(err) {
		errs = append(errs, fmt.Errorf("delete key of %s: %w", id, err))
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
		if !o.Ended && !o.Placed && o.createIndex < r.createIndex {
			pos++
		}
	}
	return pos
}

// placeLoop places queued sessions, oldest first, while fewer than Capacity
// sessions are placed and not ended.
func (s *Scheduler) placeLoop(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.kick:
		}
		for {
			r := s.nextToPlace()
			if r == nil {
				break
			}
			if err := s.place(ctx, r); err != nil {
				s.log.Error("place session", "session", r.ID, "err", err)
				if ctx.Err() != nil {
					return nil
				}
				s.fail(ctx, r.ID, "placement failed: "+err.Error())
			}
		}
		s.gcEnded(ctx)
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
			r.Placed, r.Datacenter = true, dc // reserve the slot; place() persists it
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
// evaluation, or failed allocations on its evaluation) back to the queue:
// its job and key are purged, so Nomad never holds a blocked session job,
// and it keeps its place at the front of the queue. It is offered to Nomad
// again as soon as some edge's room grows, or after a backoff. jobIndex is
// the registration the evaluation was for: evaluations of a registration
// already refused, or older than the current one, change nothing.
func (s *Scheduler) requeue(ctx context.Context, id string, jobIndex uint64, why string) {
	s.mu.Lock()
	r, ok := s.records[id]
	if !ok || r.Ended || !r.Placed || s.allocs[id] != nil || jobIndex < r.jobIndex ||
		(r.refusedIndex != 0 && jobIndex <= r.refusedIndex) {
		s.mu.Unlock()
		return
	}
	r.Placed, r.Datacenter, r.purging = false, "", true
	r.refusedIndex, r.jobIndex = max(jobIndex, r.jobIndex), 0
	r.refusedGen = s.roomGen
	r.refusals++
	wait := min(requeueBackoffMin<<min(r.refusals-1, 4), requeueBackoffMax)
	r.retryAt = time.Now().Add(wait)
	r.Choice = "Nomad could not place it (" + why + "); waiting for room"
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
		for {
			err := s.purgeJob(runCtx, id)
			if err == nil {
				err = s.storeQueued(runCtx, id)
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

// storeQueued persists a requeued session as waiting, unless it has moved
// on since (ended, or placed again).
func (s *Scheduler) storeQueued(ctx context.Context, id string) error {
	s.mu.Lock()
	r, ok := s.records[id]
	if !ok || r.Ended || r.Placed {
		s.mu.Unlock()
		return nil
	}
	rc := *r
	s.mu.Unlock()
	return s.store.put(ctx, &rc)
}

// place writes the session's key into a Nomad variable only its job can
// read, then registers the job. Registration is create-only (EnforceIndex
// with index 0), so a retried placement never places twice.
func (s *Scheduler) place(ctx context.Context, r *record) error {
	s.mu.Lock()
	rc := *r
	s.mu.Unlock()
	if err := s.store.put(ctx, &rc); err != nil {
		return err
	}
	jobID := s.JobID(r.ID)
	if _, _, err := s.nomad.Variables().Create(&nomad.Variable{
		Path:  "nomad/jobs/" + jobID,
		Items: nomad.VariableItems{"token_key": string(s.SessionKey(r.ID))},
	}, (&nomad.WriteOptions{}).WithContext(ctx)); err != nil {
		return fmt.Errorf("write session key: %w", err)
	}
	job, err := s.jobFor(ctx, r)
	if err != nil {
		return err
	}
	resp, _, err := s.nomad.Jobs().RegisterOpts(job, &nomad.RegisterOptions{EnforceIndex: true, ModifyIndex: 0},
		(&nomad.WriteOptions{}).WithContext(ctx))
	if err != nil && !strings.Contains(err.Error(), "job already exists") {
		return fmt.Errorf("register job %s: %w", jobID, err)
	}
	if resp != nil {
		s.mu.Lock()
		if cur := s.records[r.ID]; cur != nil {
			cur.jobIndex = resp.JobModifyIndex
		}
		s.mu.Unlock()
	}
	// The session may have been stopped while its job was being registered;
	// then Stop's purge may have come first, and this one must follow.
	s.mu.Lock()
	ended := s.records[r.ID] == nil || s.records[r.ID].Ended
	s.mu.Unlock()
	if ended {
		return s.purgeJob(context.WithoutCancel(ctx), r.ID)
	}
	s.log.Info("session placed", "session", r.ID, "job", jobID)
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
// places a replacement for the same player on the next-nearest edge.
func (s *Scheduler) failover(ctx context.Context, id, reason string) {
	s.mu.Lock()
	r, ok := s.records[id]
	if !ok || r.Ended {
		s.mu.Unlock()
		return
	}
	old := *r
	s.mu.Unlock()
	if s.cfg.Failover != "auto" {
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
	s.mu.Lock()
	if r, ok := s.records[id]; ok {
		r.Replacement = st.ID
	}
	s.mu.Unlock()
	s.fail(ctx, id, reason)
	s.log.Info("session failed over", "from", id, "to", st.ID, "edge", st.Datacenter, "state", st.State)
}

// fail ends a session as failed with reason.
func (s *Scheduler) fail(ctx context.Context, id, reason string) {
	if err := s.finish(ctx, id, true, reason); err != nil {
		s.log.Error("end failed session", "session", id, "err", err)
	}
}

// finish marks a session ended (or failed), persists it and, if it was
// placed, purges its job and key. Ending an ended session does nothing.
func (s *Scheduler) finish(ctx context.Context, id string, failed bool, reason string) error {
	s.mu.Lock()
	r, ok := s.records[id]
	if !ok || r.Ended {
		s.mu.Unlock()
		return nil
	}
	r.Ended, r.Failed, r.Reason, r.EndedAt = true, failed, reason, time.Now().UTC()
	rc := *r
	s.notifyLocked()
	s.mu.Unlock()
	s.log.Info("session over", "session", id, "failed", failed, "reason", reason)
	var errs []error
	if err := s.store.put(ctx, &rc); err != nil {
		errs = append(errs, err)
	}
	if rc.Placed {
		errs = append(errs, s.purgeJob(ctx, id))
	}
	s.poke()
	return errors.Join(errs...)
}

// reapLoop stops sessions nobody asked about for ReapAfter and that have no
// connected browser, and forgets ended ones after KeepEnded.
func (s *Scheduler) reapLoop(ctx context.Context) error {
	return every(ctx, time.Second, func() {
		for _, id := range s.idle(time.Now()) {
			if err := s.Stop(ctx, id, ReasonIdle); err != nil {
				s.log.Error("reap session", "session", id, "err", err)
			}
		}
		s.gcEnded(ctx)
	})
}

func (s *Scheduler) idle(now time.Time) []string {
	if s.cfg.ReapAfter <= 0 {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for id, r := range s.records {
		if r.Ended {
			continue
		}
		if s.watchers[id] > 0 || s.statusLocked(r).State == StateConnected {
			s.lastSeen[id] = now
			continue
		}
		if now.Sub(s.lastSeen[id]) >= s.cfg.ReapAfter {
			out = append(out, id)
		}
	}
	return out
}

func (s *Scheduler) gcEnded(ctx context.Context) {
	s.mu.Lock()
	var gone []string
	for id, r := range s.records {
		if r.Ended && time.Since(r.EndedAt) >= s.cfg.KeepEnded {
			gone = append(gone, id)
			delete(s.records, id)
			delete(s.allocs, id)
			delete(s.endpoints, id)
			delete(s.lastSeen, id)
			delete(s.watchers, id)
			delete(s.probeFail, id)
		}
	}
	s.mu.Unlock()
	for _, id := range gone {
		if err := s.store.delete(ctx, id); err != nil {
			s.log.Error("forget session", "session", id, "err", err)
		}
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
