// Package syncbuf has a bytes.Buffer that one goroutine (a subprocess's
// output, a logger) writes while another reads it: tests collect logs with
// it for their failure messages.
package syncbuf

import (
	"bytes"
	"sync"
)

// Buffer is an io.Writer whose String is safe while writes go on.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String is everything written so far.
func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
