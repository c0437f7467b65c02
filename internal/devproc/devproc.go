// Package devproc runs `metal dev` for tests as a user does: started with
// the test's agent binaries on a free gateway port, its player URL read
// from what it prints, and stopped with Ctrl-C (SIGINT), on a failure too,
// never SIGKILL, which would leave its agents, their tasks and containers
// running.
package devproc

import (
	"bufio"
	"context"
	"io"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/metal-stream/metal/internal/syncbuf"
)

// Dev is one running `metal dev`.
type Dev struct {
	Cmd    *exec.Cmd
	Stderr *syncbuf.Buffer // its progress and the agents' addresses
	urls   chan string
}

// Start starts bin (a metal binary) as `metal dev -gateway-port 0` with the
// given agent binaries; extra flags follow.
func Start(bin, nomadBin, consulBin string, extra ...string) (*Dev, error) {
	args := append([]string{"dev", "-gateway-port", "0", "-nomad-bin", nomadBin, "-consul-bin", consulBin}, extra...)
	// Not CommandContext: a deadline must not SIGKILL it (see Stop).
	cmd := exec.Command(bin, args...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	d := &Dev{Cmd: cmd, Stderr: &syncbuf.Buffer{}, urls: make(chan string, 1)}
	cmd.Stderr = d.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "http://") {
				select {
				case d.urls <- strings.TrimSpace(sc.Text()):
				default:
				}
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
		close(d.urls) // it ended without (another) URL
	}()
	return d, nil
}

// URL waits for the player URL it prints ("" if it ends or ctx does first).
func (d *Dev) URL(ctx context.Context) string {
	select {
	case url := <-d.urls:
		return url
	case <-ctx.Done():
		return ""
	}
}

// Stop stops it as a user does (Ctrl-C) if it still runs, and waits up to
// two minutes for it to end before killing it.
func (d *Dev) Stop() {
	if d.Cmd.ProcessState != nil {
		return
	}
	_ = d.Cmd.Process.Signal(syscall.SIGINT)
	done := make(chan struct{})
	go func() { _ = d.Cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		_ = d.Cmd.Process.Kill()
		<-done
	}
}
