package scheduler

import "errors"

var (
	// ErrQueueFull is returned when the queue holds its bound.
	ErrQueueFull = errors.New("queue full")
	// ErrNotFound is returned for an unknown session.
	ErrNotFound = errors.New("session not found")
)
