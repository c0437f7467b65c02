package scheduler

import (
	"context"
	"fmt"
	"time"

	"github.com/cenkalti/backoff/v4"
	consul "github.com/hashicorp/consul/api"
	"golang.org/x/sync/errgroup"
)

// Leadership. Every gateway admits players, answers for every session and
// follows Nomad and Consul; one at a time, the holder of a Consul lock,
// also places, reaps, fails sessions over and reconciles (lead). The lock
// is consul/api's Lock on <root>-leader, held by a Consul session of this
// gateway's own:
//
//   - The session is tied to a TTL check this gateway passes every
//     lockCheckPass (a service "metal-gateway-lock" on the local agent) and
//     to the agent's serfHealth. A killed gateway stops passing it; the
//     check turns critical lockCheckTTL later, Consul invalidates the
//     session and releases the lock, and a waiting gateway takes it: a new
//     leader within about 3 s. A lost host is caught by serfHealth.
//   - The session's own TTL (lockSessionTTL, Consul's minimum) is only a
//     backstop for a check that is somehow never run.
//   - lock-delay is 0. Consul's lock-delay keeps a released lock from
//     being taken again for a while, so that a leader that has not noticed
//     it lost the lock stops acting first; consul/api then retries only
//     after 5 s, which alone would break a 5 s failover. Metal fences
//     instead: every write only the leader may make (placing a session,
//     sending it back to the queue) is a Consul transaction that also
//     checks the lock is still held by this gateway's session, and a job is
//     registered only after that write. A gateway that lost the lock cannot
//     place, whatever it believes.
const (
	lockSessionTTL = "10s"
	lockCheckTTL   = 2 * time.Second
	lockCheckPass  = 500 * time.Millisecond
	// LockService is the Consul service whose TTL check ties a gateway's
	// lock session to the gateway being alive.
	LockService = "metal-gateway-lock"
)

// Leading reports whether this gateway holds the leader lock now.
func (s *Scheduler) Leading() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.leadCtx != nil && s.leadCtx.Err() == nil
}

// fence is the lock this gateway holds, for fenced writes; nil when it
// does not lead.
func (s *Scheduler) fence() *fence {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.leadCtx == nil || s.leadCtx.Err() != nil {
		return nil
	}
	return &fence{key: s.store.lockKey(), session: s.leadSession}
}

// awaitLeader watches the lock key until some gateway holds it once (this
// one or another), for Ready.
func (s *Scheduler) awaitLeader(ctx context.Context) error {
	var index uint64
	for ctx.Err() == nil {
		q := (&consul.QueryOptions{WaitIndex: index, WaitTime: 10 * time.Second}).WithContext(ctx)
		p, meta, err := s.store.kv.Get(s.store.lockKey(), q)
		if err != nil {
			if ctx.Err() == nil {
				s.consulError("read the leader lock", err)
			}
			sleep(ctx, time.Second)
			continue
		}
		index = meta.LastIndex
		if (p != nil && p.Session != "") || s.Leading() {
			s.mu.Lock()
			s.leaderSeen = true
			s.notifyLocked()
			s.mu.Unlock()
			return nil
		}
	}
	return nil
}

func (s *Scheduler) lockCheckID() string { return LockService + "-" + s.cfg.Instance }

// campaign keeps this gateway in the running for the lock until ctx ends,
// and leads whenever it holds it.
func (s *Scheduler) campaign(ctx context.Context) error {
	b := backoff.NewExponentialBackOff()
	b.MaxInterval, b.MaxElapsedTime = 5*time.Second, 0
	for ctx.Err() == nil {
		if err := s.registerLockCheck(ctx); err != nil {
			s.consulError("register lock check", err)
			sleep(ctx, b.NextBackOff())
			continue
		}
		break
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Second)
		defer cancel()
		_ = s.consul.Agent().ServiceDeregisterOpts(s.lockCheckID(), (&consul.QueryOptions{}).WithContext(ctx))
	}()
	var g errgroup.Group
	passCtx, stopPass := context.WithCancel(ctx)
	g.Go(func() error { return s.passLockCheck(passCtx) })
	defer func() { stopPass(); _ = g.Wait() }()
	b.Reset()
	for ctx.Err() == nil {
		start := time.Now()
		err := s.leadOnce(ctx)
		if ctx.Err() != nil {
			break
		}
		if err != nil {
			s.consulError("leader lock", err)
		}
		if time.Since(start) > time.Minute {
			b.Reset()
		}
		sleep(ctx, b.NextBackOff())
	}
	return nil
}

func (s *Scheduler) registerLockCheck(ctx context.Context) error {
	return s.consul.Agent().ServiceRegisterOpts(&consul.AgentServiceRegistration{
		ID: s.lockCheckID(), Name: LockService,
		Meta: map[string]string{"instance": s.cfg.Instance},
		Check: &consul.AgentServiceCheck{
			CheckID: s.lockCheckID(), Name: "gateway alive", TTL: lockCheckTTL.String(),
			Status: consul.HealthPassing, DeregisterCriticalServiceAfter: "1m",
		},
	}, consul.ServiceRegisterOpts{}.WithContext(ctx))
}

// passLockCheck passes the lock check while this gateway runs; when the
// agent lost it (an agent restart), it registers it again.
func (s *Scheduler) passLockCheck(ctx context.Context) error {
	return every(ctx, lockCheckPass, func() {
		// Bounded: a hung call must not hold up the next pass.
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		err := s.consul.Agent().UpdateTTLOpts(s.lockCheckID(), "", consul.HealthPassing, (&consul.QueryOptions{}).WithContext(pctx))
		if err != nil && ctx.Err() == nil {
			s.consulError("pass the leader lock check", err)
			rctx, rcancel := context.WithTimeout(ctx, time.Second)
			defer rcancel()
			_ = s.registerLockCheck(rctx)
		}
	})
}

// createLockSession creates this gateway's lock session with lock-delay 0
// (consul/api's SessionEntry cannot say 0: it means Consul's 15 s default).
func (s *Scheduler) createLockSession(ctx context.Context) (string, error) {
	body := map[string]any{
		"Name": "metal-gateway " + s.cfg.Instance, "TTL": lockSessionTTL, "LockDelay": "0s",
		"Behavior": consul.SessionBehaviorRelease, "NodeChecks": []string{"serfHealth"},
		"ServiceChecks": []map[string]string{{"ID": s.lockCheckID()}},
	}
	var out struct{ ID string }
	if _, err := s.consul.Raw().Write("/v1/session/create", body, &out, (&consul.WriteOptions{}).WithContext(ctx)); err != nil {
		return "", fmt.Errorf("create lock session: %w", err)
	}
	return out.ID, nil
}

// leadOnce waits for the lock with a new session, leads while it holds it,
// and releases it.
func (s *Scheduler) leadOnce(ctx context.Context) error {
	sid, err := s.createLockSession(ctx)
	if err != nil {
		return err
	}
	renewDone := make(chan struct{})
	defer close(renewDone) // RenewPeriodic destroys the session
	go func() { _ = s.consul.Session().RenewPeriodic(lockSessionTTL, sid, nil, renewDone) }()
	lock, err := s.consul.LockOpts(&consul.LockOptions{
		Key: s.store.lockKey(), Value: []byte(s.cfg.Instance), Session: sid,
		LockWaitTime: 2 * time.Second, MonitorRetries: 5, MonitorRetryTime: time.Second,
	})
	if err != nil {
		return err
	}
	stop := make(chan struct{})
	unhook := context.AfterFunc(ctx, func() { close(stop) })
	defer unhook()
	lost, err := lock.Lock(stop)
	if err != nil || lost == nil {
		return err
	}
	defer func() { _ = lock.Unlock() }()
	leadCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-lost:
			s.log.Warn("lost the leader lock")
		case <-leadCtx.Done():
		}
		cancel()
	}()
	s.mu.Lock()
	s.leadCtx, s.leadSession = leadCtx, sid
	s.mu.Unlock()
	s.metrics.leader.Set(1)
	s.log.Info("leading", "instance", s.cfg.Instance)
	err = s.lead(leadCtx)
	s.mu.Lock()
	s.leadCtx, s.leadSession = nil, ""
	s.notifyLocked()
	s.mu.Unlock()
	s.metrics.leader.Set(0)
	s.log.Info("no longer leading", "instance", s.cfg.Instance)
	return err
}

// lead does the leader's work until ctx ends: it first takes a consistent
// view of every record (nothing the last leader stored is missed), acts on
// what it followed while not leading, then places, reaps and reconciles.
func (s *Scheduler) lead(ctx context.Context) error {
	recs, idx, err := s.store.list(ctx, 0, true)
	if err != nil {
		return err
	}
	s.adoptAll(recs, idx)
	s.mu.Lock()
	now := time.Now()
	for id, r := range s.records {
		if !r.Ended {
			s.lastSeen[id] = now // a new leader gives browsers a full reap period
		}
	}
	s.mu.Unlock()
	s.catchUp(ctx)
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return s.placeLoop(ctx) })
	g.Go(func() error { return s.reapLoop(ctx) })
	g.Go(func() error { return s.sweepLoop(ctx) })
	s.poke()
	return g.Wait()
}
