// Package clustertest gives a test package one real Consul and Nomad cluster
// on loopback, started in TestMain and stopped (by PID) when the tests end.
//
// Where the agent binaries are missing the tests that need them skip, except
// under CI=true, where a missing binary fails the run: CI never silently skips.
package clustertest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/metal-stream/metal/internal/localcluster"
)

var (
	cluster  *localcluster.Cluster
	startErr error
)

// Options are passed to localcluster.Start by Main.
type Options struct {
	localcluster.Options
	// VerifyLeaks checks, after the cluster has stopped, that the tests left
	// no goroutine running (go.uber.org/goleak).
	VerifyLeaks bool
}

// Main starts a cluster, runs the package's tests and stops the cluster. Call
// it from TestMain: `func TestMain(m *testing.M) { clustertest.Main(m, clustertest.Options{}) }`.
func Main(m *testing.M, o Options) {
	os.Exit(Run(m, o))
}

// Run is Main without the exit, for a TestMain with more to clean up.
func Run(m *testing.M, o Options) int {
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	cluster, startErr = localcluster.Start(ctx, o.Options)
	cancel()
	if startErr != nil && os.Getenv("CI") == "true" {
		fmt.Fprintf(os.Stderr, "clustertest: CI=true and the local cluster did not start: %v\n", startErr)
		return 1
	}
	code := m.Run()
	if cluster != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if err := cluster.Stop(ctx); err != nil {
			fmt.Fprintf(os.Stderr, "clustertest: stop: %v\n", err)
			if code == 0 {
				code = 1
			}
		}
	}
	if o.VerifyLeaks && code == 0 {
		http.DefaultClient.CloseIdleConnections()
		if err := goleak.Find(
			goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
			goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
			goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
		); err != nil {
			fmt.Fprintf(os.Stderr, "clustertest: goroutines leaked: %v\n", err)
			code = 1
		}
	}
	return code
}

// Cluster returns the package's running cluster. It skips the test when the
// agent binaries are missing outside CI, and fails it on any other start error.
func Cluster(t testing.TB) *localcluster.Cluster {
	t.Helper()
	switch {
	case startErr == nil && cluster == nil:
		t.Fatal("clustertest: call clustertest.Main from TestMain")
	case errors.Is(startErr, localcluster.ErrBinaryNotFound) && os.Getenv("CI") != "true":
		t.Skipf("clustertest: %v", startErr)
	case startErr != nil:
		t.Fatalf("clustertest: %v", startErr)
	}
	return cluster
}

// Binaries returns the nomad and consul binaries, for tests that start agents
// through another program (`metal dev`). Missing binaries skip the test, or
// fail it under CI=true.
func Binaries(t testing.TB) (nomadBin, consulBin string) {
	t.Helper()
	var errs []error
	nomadBin, err := localcluster.FindBinary("nomad")
	errs = append(errs, err)
	consulBin, err = localcluster.FindBinary("consul")
	errs = append(errs, err)
	if err := errors.Join(errs...); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("clustertest: CI=true: %v", err)
		}
		t.Skipf("clustertest: %v", err)
	}
	return nomadBin, consulBin
}
