package localcluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// process is one agent started by this package. It runs in its own process
// group so that a Ctrl-C in the terminal reaches `metal dev` only, which then
// stops the agents in order.
type process struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	err     error
}

// startProcess starts bin, inside o's network namespace (ip netns exec
// replaces itself with bin, so the PID is the agent's) or container (the PID
// is docker exec's; the agent ends with its container).
func startProcess(name, logPath string, o Options, bin string, args ...string) (*process, error) {
	switch {
	case o.Netns != "":
		args = append([]string{"netns", "exec", o.Netns, bin}, args...)
		bin = "ip"
	case o.Container != "":
		args = append([]string{"exec", o.Container, bin}, args...)
		bin = "docker"
	}
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open %s log: %w", name, err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	// No Pdeathsig: it follows the OS thread that forked, not the process,
	// and Go retires threads. Stop (or Ctrl-C on `metal dev`) ends the agents.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logFile.Close()
		close(p.done)
	}()
	return p, nil
}

// PID is the operating system's process id of the agent.
func (p *process) PID() int { return p.cmd.Process.Pid }

// exited reports whether the process has ended.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM to the agent's PID, then SIGKILL after grace.
func (p *process) stop(grace time.Duration) error {
	if p.exited() {
		return nil
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-time.After(grace):
	}
	_ = p.cmd.Process.Kill()
	<-p.done
	return fmt.Errorf("%s (pid %d) ignored SIGTERM for %s; killed", p.name, p.PID(), grace)
}

// logTail returns the last bytes of the agent's log, for error messages.
func (p *process) logTail() string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return ""
	}
	const max = 2048
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return string(bytes.TrimSpace(b))
}

// waitFor polls check until it returns true, the process exits, or ctx ends.
// The checks themselves are blocking queries where the API offers one.
func (p *process) waitFor(ctx context.Context, what string, check func(context.Context) (bool, error)) error {
	delay := 50 * time.Millisecond
	var lastErr error
	for {
		ok, err := check(ctx)
		if ok {
			return nil
		}
		if err != nil {
			lastErr = err
		}
		if p.exited() {
			return fmt.Errorf("%s exited before %s: %v\n%s: %w", p.name, what, p.err, p.logTail(), ErrNotReady)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: waiting for %s: %w (last error: %v)\n%s: %w",
				p.name, what, ctx.Err(), lastErr, p.logTail(), errors.Join(ErrNotReady, ctx.Err()))
		case <-time.After(delay):
		}
		if delay < 500*time.Millisecond {
			delay *= 2
		}
	}
}
