package streamer

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// desktop is what the player sees and drives: a shell command (a window
// manager and a terminal, say) the streamer starts on its display once the
// display and PulseAudio are up, with DISPLAY and PULSE_SERVER set, and
// ends, with everything it started, when the streamer stops. A desktop that
// exits (the player closed its last window) leaves the stream running.
type desktop struct {
	cmd  *exec.Cmd
	done chan struct{}
}

func startDesktop(command, display string, log *slog.Logger) (*desktop, error) {
	cmd := exec.Command("/bin/sh", "-c", command)
	cmd.Env = append(desktopEnv(os.Environ()), "DISPLAY="+display)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	// Its output, a line at a time and bounded, in the streamer's log.
	lines := &lineLog{log: log.With("component", "desktop"), left: 1 << 20}
	cmd.Stdout, cmd.Stderr = lines, lines
	wait, err := startPinned(cmd)
	if err != nil {
		return nil, fmt.Errorf("start desktop %q: %w", command, err)
	}
	log = log.With("component", "desktop", "pid", cmd.Process.Pid)
	log.Info("desktop started", "command", command, "display", display)
	d := &desktop{cmd: cmd, done: make(chan struct{})}
	go func() {
		err := wait()
		log.Info("desktop exited; the stream goes on", "err", err)
		close(d.done)
	}()
	return d, nil
}

// desktopEnv is the streamer's environment without its secrets and its
// agents' addresses: the desktop is the player's (a terminal, a game), so
// nothing in it may read the session-token key (METAL_TOKEN_KEY, from the
// job's template) or any METAL_, NOMAD_, CONSUL_ or VAULT_ variable.
func desktopEnv(env []string) []string {
	out := make([]string, 0, len(env))
	for _, kv := range env {
		name, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(name, "METAL_"), strings.HasPrefix(name, "NOMAD_"),
			strings.HasPrefix(name, "CONSUL_"), strings.HasPrefix(name, "VAULT_"):
			continue
		}
		out = append(out, kv)
	}
	return out
}

// stop ends the desktop's whole process group: SIGTERM, then SIGKILL after
// 5 s.
func (d *desktop) stop() {
	pgid := -d.cmd.Process.Pid
	_ = syscall.Kill(pgid, syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(pgid, syscall.SIGKILL)
		<-d.done
	}
	// Children that outlived the shell (a window manager the shell ran in
	// the background) are in the same group.
	_ = syscall.Kill(pgid, syscall.SIGKILL)
}

// lineLog writes what it is given to log, a line at a time, at most left
// bytes in all (a chatty desktop must not fill the streamer's log).
type lineLog struct {
	log  *slog.Logger
	left int
	buf  []byte
}

func (l *lineLog) Write(p []byte) (int, error) {
	n := len(p)
	if l.left <= 0 {
		return n, nil
	}
	if len(p) > l.left {
		p = p[:l.left]
	}
	l.left -= len(p)
	l.buf = append(l.buf, p...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			break
		}
		l.log.Debug("desktop", "line", string(l.buf[:i]))
		l.buf = l.buf[i+1:]
	}
	return n, nil
}
