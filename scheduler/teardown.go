package scheduler

import (
	"context"
	"errors"
	"fmt"
	"strings"

	nomad "github.com/hashicorp/nomad/api"
)

// Teardown removes every session job and key in the session namespace, for
// a gateway whose own job was stopped for good (terraform destroy, nomad job
// stop): nothing is left to manage them, and Nomad deletes a namespace only
// when it holds no live job and no variable. Keys go first, so a namespace
// delete that gets between the two finds a job (which the Terraform
// provider retries) rather than a lone variable (which it does not). It
// returns how many sessions it removed.
func (s *Scheduler) Teardown(ctx context.Context) (int, error) {
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
	stubs, _, err := s.nomad.Jobs().PrefixList(s.cfg.JobPrefix)
	if err != nil {
		return 0, errors.Join(append(errs, fmt.Errorf("teardown: list session jobs: %w", err))...)
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
