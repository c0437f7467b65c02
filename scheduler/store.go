package scheduler

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	consul "github.com/hashicorp/consul/api"
)

// store keeps session records in Consul KV, the state every gateway shares.
//
//   - <prefix><id>: a session record (JSON). The queue order is the key's
//     CreateIndex, which Consul assigns in commit order, so every gateway
//     computes the same positions.
//   - <root>-players/<hash of player>: the player's claim, the id of their
//     session. Creating a session writes its record and moves the claim in
//     one transaction, so a player holds one live session across gateways.
//   - <root>-seen/<id>: when a browser last asked any gateway about the
//     session (seen.go), for the leader's reaper.
//
// Every change is a check-and-set on the record's ModifyIndex; a change the
// leader makes alone (placing, requeueing) also checks that the leader's
// Consul session still holds the lock, so a gateway that lost the lock and
// does not know it yet cannot place.
type store struct {
	kv     *consul.KV
	txn    *consul.Txn
	prefix string
}

// fence is the leader's lock: a transaction with a fence commits only while
// session holds key.
type fence struct {
	key, session string
}

var (
	// errConflict: the record changed since it was read (another gateway
	// wrote it); read it again and retry.
	errConflict = errors.New("session record changed concurrently")
	// errClaimed: the player's claim moved since it was read.
	errClaimed = errors.New("player claim changed concurrently")
	// errOvertaken: a session was admitted (at any gateway) since the
	// leader last looked at the queue.
	errOvertaken = errors.New("a session was admitted meanwhile")
)

func (s *store) key(id string) string { return s.prefix + id }

func (s *store) root() string { return strings.TrimSuffix(s.prefix, "/") }

func (s *store) claimKey(player string) string {
	h := sha256.Sum256([]byte(player))
	return s.root() + "-players/" + hex.EncodeToString(h[:16])
}

func (s *store) seenKey(id string) string { return s.root() + "-seen/" + id }

// tailKey changes with every admission: a placement in the request checks
// it has not changed since the leader read the queue.
func (s *store) tailKey() string { return s.root() + "-tail" }

// tail reads the tail key's index (0: no admission yet), consistently.
func (s *store) tail(ctx context.Context) (uint64, error) {
	p, _, err := s.kv.Get(s.tailKey(), (&consul.QueryOptions{RequireConsistent: true}).WithContext(ctx))
	if err != nil {
		return 0, unavailable(fmt.Errorf("read queue tail: %w", err))
	}
	if p == nil {
		return 0, nil
	}
	return p.ModifyIndex, nil
}

// lockKey is the key the leader holds.
func (s *store) lockKey() string { return s.root() + "-leader" }

// claim is where a player's live session is recorded.
type claim struct {
	session string
	index   uint64 // ModifyIndex; 0 when there is none
}

// getClaim reads a player's claim (consistently: it decides admissions).
func (s *store) getClaim(ctx context.Context, player string) (claim, error) {
	p, _, err := s.kv.Get(s.claimKey(player), (&consul.QueryOptions{RequireConsistent: true}).WithContext(ctx))
	if err != nil {
		return claim{}, unavailable(fmt.Errorf("read player claim: %w", err))
	}
	if p == nil {
		return claim{}, nil
	}
	return claim{session: string(p.Value), index: p.ModifyIndex}, nil
}

// create writes a new record and moves its player's claim to it, in one
// transaction: the claim must still be at c.index (0: absent). Every
// admission moves the queue's tail. With a fence it commits only while the
// leader holds the lock and, for a session placed in the request, only if
// the tail is still at tail (nobody was admitted since the leader read the
// queue, so nobody older waits). It sets r's indexes.
func (s *store) create(ctx context.Context, r *record, c claim, f *fence, tail uint64) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	check := &consul.KVTxnOp{Verb: consul.KVCheckIndex, Key: s.tailKey(), Index: tail}
	if tail == 0 {
		check = &consul.KVTxnOp{Verb: consul.KVCheckNotExists, Key: s.tailKey()}
	}
	if !r.Placed {
		check = &consul.KVTxnOp{Verb: consul.KVGetOrEmpty, Key: s.tailKey()} // no check
	}
	ops := consul.TxnOps{
		{KV: check},
		{KV: &consul.KVTxnOp{Verb: consul.KVCAS, Key: s.claimKey(r.Player), Value: []byte(r.ID), Index: c.index}},
		{KV: &consul.KVTxnOp{Verb: consul.KVCAS, Key: s.key(r.ID), Value: b, Index: 0}},
		{KV: &consul.KVTxnOp{Verb: consul.KVSet, Key: s.tailKey(), Value: []byte(r.ID)}},
	}
	res, err := s.commit(ctx, ops, f, errOvertaken, errClaimed, errConflict)
	if err != nil {
		return fmt.Errorf("store session %s: %w", r.ID, err)
	}
	kv := res[s.key(r.ID)]
	if kv == nil {
		return fmt.Errorf("store session %s: no index in the answer", r.ID)
	}
	r.createIndex, r.modifyIndex = kv.CreateIndex, kv.ModifyIndex
	return nil
}

// update writes r if its record is still at r.modifyIndex, and sets the new
// index.
func (s *store) update(ctx context.Context, r *record, f *fence) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	ops := consul.TxnOps{{KV: &consul.KVTxnOp{Verb: consul.KVCAS, Key: s.key(r.ID), Value: b, Index: r.modifyIndex}}}
	res, err := s.commit(ctx, ops, f, errConflict)
	if err != nil {
		return fmt.Errorf("store session %s: %w", r.ID, err)
	}
	kv := res[s.key(r.ID)]
	if kv == nil {
		return fmt.Errorf("store session %s: no index in the answer", r.ID)
	}
	r.modifyIndex = kv.ModifyIndex
	return nil
}

// remove deletes a record still at r.modifyIndex, its seen key, and its
// player's claim if the claim still names it.
func (s *store) remove(ctx context.Context, r *record, f *fence) error {
	ops := consul.TxnOps{
		{KV: &consul.KVTxnOp{Verb: consul.KVDeleteCAS, Key: s.key(r.ID), Index: r.modifyIndex}},
		{KV: &consul.KVTxnOp{Verb: consul.KVDelete, Key: s.seenKey(r.ID)}},
	}
	c, err := s.getClaim(ctx, r.Player)
	if err != nil {
		return err
	}
	if c.session == r.ID {
		ops = append(ops, &consul.TxnOp{KV: &consul.KVTxnOp{Verb: consul.KVDeleteCAS, Key: s.claimKey(r.Player), Index: c.index}})
	}
	if _, err := s.commit(ctx, ops, f, errConflict, nil, errClaimed); err != nil {
		return fmt.Errorf("delete session %s: %w", r.ID, err)
	}
	return nil
}

// get reads one record consistently; nil when there is none.
func (s *store) get(ctx context.Context, id string) (*record, error) {
	p, _, err := s.kv.Get(s.key(id), (&consul.QueryOptions{RequireConsistent: true}).WithContext(ctx))
	if err != nil {
		return nil, unavailable(fmt.Errorf("read session %s: %w", id, err))
	}
	if p == nil {
		return nil, nil
	}
	return decode(p), nil
}

// commit runs ops, preceded by the fence's check when f is set. A rolled
// back transaction reports the failing op's error from errs (by op index),
// or ErrNotLeader when the fence failed. It returns the entries the
// transaction wrote, by key, with their new indexes.
func (s *store) commit(ctx context.Context, ops consul.TxnOps, f *fence, errs ...error) (map[string]*consul.KVPair, error) {
	off := 0
	if f != nil {
		ops = append(consul.TxnOps{{KV: &consul.KVTxnOp{Verb: consul.KVCheckSession, Key: f.key, Session: f.session}}}, ops...)
		off = 1
	}
	ok, resp, _, err := s.txn.Txn(ops, (&consul.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return nil, unavailable(err)
	}
	if !ok {
		for _, e := range resp.Errors {
			i := e.OpIndex - off
			switch {
			case i < 0:
				return nil, ErrNotLeader
			case i < len(errs) && errs[i] != nil:
				return nil, errs[i]
			}
		}
		return nil, fmt.Errorf("transaction rolled back: %v", resp.Errors)
	}
	out := make(map[string]*consul.KVPair, len(resp.Results))
	for _, r := range resp.Results {
		if r.KV != nil {
			out[r.KV.Key] = r.KV
		}
	}
	return out, nil
}

// list returns every record in queue order and the KV index of the listing;
// with waitIndex it blocks until something under the prefix changes.
// Reads may be stale (a Consul leader election must not stop gateways
// from answering); check-and-set writes catch what a stale read missed.
func (s *store) list(ctx context.Context, waitIndex uint64, consistent bool) ([]*record, uint64, error) {
	q := (&consul.QueryOptions{WaitIndex: waitIndex, WaitTime: 30 * time.Second, AllowStale: !consistent, RequireConsistent: consistent}).WithContext(ctx)
	pairs, meta, err := s.kv.List(s.prefix, q)
	if err != nil {
		return nil, 0, unavailable(fmt.Errorf("list sessions: %w", err))
	}
	out := make([]*record, 0, len(pairs))
	for _, p := range pairs {
		if r := decode(p); r != nil {
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].createIndex < out[j].createIndex })
	return out, meta.LastIndex, nil
}

// decode reads a record from its pair; nil when the pair is not one (a
// stray key must never stop admissions).
func decode(p *consul.KVPair) *record {
	var r record
	if err := json.Unmarshal(p.Value, &r); err != nil || r.ID == "" || !strings.HasSuffix(p.Key, "/"+r.ID) {
		return nil
	}
	r.createIndex, r.modifyIndex = p.CreateIndex, p.ModifyIndex
	return &r
}
