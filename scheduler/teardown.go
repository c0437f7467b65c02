package scheduler

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	nomad "github.com/hashicorp/nomad/api"
)

// Teardown removes every session job and key in the session namespace, for
// a gateway whose own job was stopped for good (terraform destroy, nomad job
// stop): nothing is left to manage them, and Nomad deletes a namespace only
// when it holds no live job and no variable. A placement in flight when the
// gateway stopped may register its job a moment later, so passes repeat, 2 s
// apart, until two in a row find nothing or ctx ends. It returns how many
// sessions it removed.
func (s *Scheduler) Teardown(ctx context.Context) (int, error) {
	total, empty := 0, 0
	for {
		n, err := s.teardownPass(ctx)
		total += n
		switch {
		case err != nil && ctx.Err() != nil:
			return total, err
		case err != nil: // a passing failure (Nomad busy): pass again
			s.log.Warn("teardown pass", "err", err)
			empty = 0
		case n == 0:
			empty++
		default:
			empty = 0
		}
		if empty == 2 {
			return total, nil
		}
		select {
		case <-ctx.Done():
			return total, fmt.Errorf("teardown: %w", ctx.Err())
		case <-time.After(2 * time.Second):
		}
	}
}

// teardownPass removes what one listing finds. Keys go first, so a
// namespace delete that gets between the two finds a job (which the
// Terraform provider retries) rather than a lone variable (which it does
// not).
func (s *Scheduler) teardownPass(ctx context.Context) (int, error) {
	q := (&nomad.QueryOptions{}).WithContext(ctx)
	w := (&nomad.WriteOptions{}).WithContext(ctx)
	vars, _, err := s.nomad.Variables().PrefixList("nomad/jobs/"+s.cfg.JobPrefix, q)
	if err != nil {
		return 0, fmt.Errorf("teardown: list session keys: %w", err)
	}
	var errs []error
	ids := map[string]bool{}
	for _, v := range vars {
		if _, err := s.nomad.Variables().Delete(v.Path, w); err != nil && !isNotFound(err) {
			errs = append(errs, fmt.Errorf("teardown: delete %s: %w", v.Path, err))
		}
		ids[strings.TrimPrefix(v.Path, "nomad/jobs/")] = true
	}
	stubs, _, err := s.nomad.Jobs().List((&nomad.QueryOptions{Prefix: s.cfg.JobPrefix}).WithContext(ctx))
	if err != nil {
		return len(ids), errors.Join(append(errs, fmt.Errorf("teardown: list session jobs: %w", err))...)
	}
	for _, j := range stubs {
		if !strings.HasPrefix(j.ID, s.cfg.JobPrefix) {
			continue
		}
		if _, _, err := s.nomad.Jobs().Deregister(j.ID, true, w); err != nil && !isNotFound(err) {
			errs = append(errs, fmt.Errorf("teardown: purge %s: %w", j.ID, err))
		}
		ids[j.ID] = true
	}
	return len(ids), errors.Join(errs...)
}
