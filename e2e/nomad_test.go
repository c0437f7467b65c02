package e2e

import (
	"context"
	"time"

	nomad "github.com/hashicorp/nomad/api"
)

// nomadQuery builds blocking-query options.
type nomadQuery struct{ index uint64 }

func (q *nomadQuery) opts(ctx context.Context) *nomad.QueryOptions {
	return (&nomad.QueryOptions{WaitIndex: q.index, WaitTime: 2 * time.Second}).WithContext(ctx)
}
