package scheduler

import (
	"errors"
	"fmt"
)

var (
	// ErrQueueFull is returned when the queue holds its bound.
	ErrQueueFull = errors.New("queue full")
	// ErrNotFound is returned for an unknown session.
	ErrNotFound = errors.New("session not found")
	// ErrUnavailable wraps a failure of Nomad or Consul that should pass
	// (an outage, a leader election): the gateway answers 503 with
	// Retry-After, and nothing is failed for it.
	ErrUnavailable = errors.New("cluster unavailable")
	// ErrNotLeader: this gateway does not hold the leader lock (any more),
	// so it may not place.
	ErrNotLeader = errors.New("not the leader")
)

// unavailable marks err as an outage (errors.Is(err, ErrUnavailable)).
func unavailable(err error) error {
	if err == nil || errors.Is(err, ErrUnavailable) {
		return err
	}
	return fmt.Errorf("%w: %w", ErrUnavailable, err)
}
