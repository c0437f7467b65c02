package e2e

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	nomad "github.com/hashicorp/nomad/api"

	"github.com/metal-stream/metal/internal/localcluster/clustertest"
)

// nomadQuery builds blocking-query options.
type nomadQuery struct{ index uint64 }

func (q *nomadQuery) opts(ctx context.Context) *nomad.QueryOptions {
	return (&nomad.QueryOptions{WaitIndex: q.index, WaitTime: 2 * time.Second}).WithContext(ctx)
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

// localclusterBinaries finds the agents, failing under CI when missing.
func localclusterBinaries(t *testing.T) (string, string) {
	t.Helper()
	return clustertest.Binaries(t)
}
