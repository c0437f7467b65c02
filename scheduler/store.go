package scheduler

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	consul "github.com/hashicorp/consul/api"
)

// store keeps session records in Consul KV under prefix. The queue order is
// each record's CreateIndex, which Consul assigns in commit order.
type store struct {
	kv     *consul.KV
	prefix string
}

func (s *store) key(id string) string { return s.prefix + id }

// put writes a record.
func (s *store) put(ctx context.Context, r *record) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if _, err := s.kv.Put(&consul.KVPair{Key: s.key(r.ID), Value: b}, (&consul.WriteOptions{}).WithContext(ctx)); err != nil {
		return fmt.Errorf("store session %s: %w", r.ID, err)
	}
	return nil
}

func (s *store) delete(ctx context.Context, id string) error {
	if _, err := s.kv.Delete(s.key(id), (&consul.WriteOptions{}).WithContext(ctx)); err != nil {
		return fmt.Errorf("delete session %s: %w", id, err)
	}
	return nil
}

// list returns every record in queue order; with waitIndex it blocks until
// something under the prefix changes.
func (s *store) list(ctx context.Context, waitIndex uint64) ([]*record, uint64, error) {
	q := (&consul.QueryOptions{WaitIndex: waitIndex, AllowStale: true}).WithContext(ctx)
	pairs, meta, err := s.kv.List(s.prefix, q)
	if err != nil {
		return nil, 0, fmt.Errorf("list sessions: %w", err)
	}
	out := make([]*record, 0, len(pairs))
	for _, p := range pairs {
		var r record
		if err := json.Unmarshal(p.Value, &r); err != nil || r.ID == "" || !strings.HasSuffix(p.Key, r.ID) {
			continue // not ours; never let a stray key stop admissions
		}
		r.createIndex = p.CreateIndex
		out = append(out, &r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].createIndex < out[j].createIndex })
	return out, meta.LastIndex, nil
}
