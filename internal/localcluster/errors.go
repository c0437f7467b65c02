package localcluster

import "errors"

// ErrBinaryNotFound is returned when the nomad or consul binary cannot be found.
var ErrBinaryNotFound = errors.New("agent binary not found")

// ErrNotReady is returned when an agent does not become ready in time.
var ErrNotReady = errors.New("agent not ready")
