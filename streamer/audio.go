package streamer

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// audioSink is "metal", a PulseAudio null sink; the streamer captures its
// monitor and applications play into it.
const audioSink = "metal"

// pulse is a PulseAudio server holding the null sink.
type pulse struct {
	server string // for pulsesrc server= and PULSE_SERVER
	cmd    *exec.Cmd
	dir    string
	done   chan struct{}
}

// startPulse starts a private PulseAudio server with a null sink and an
// anonymous unix socket. A desktop's own applications reach it through
// PULSE_SERVER, which the streamer exports to the processes it starts.
func startPulse(ctx context.Context) (*pulse, error) {
	removeStalePulseDirs()
	dir, err := os.MkdirTemp("", "metal-pulse-")
	if err != nil {
		return nil, fmt.Errorf("pulse dir: %w", err)
	}
	sock := filepath.Join(dir, "native")
	cmd := exec.Command("pulseaudio", "--daemonize=no", "--exit-idle-time=-1", "-n", "--use-pid-file=no",
		"--load=module-native-protocol-unix socket="+sock+" auth-anonymous=1",
		"--load=module-null-sink sink_name="+audioSink+" rate=48000 channels=2",
		"--log-target=stderr", "--log-level=error")
	cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_RUNTIME_DIR="+dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	wait, err := startPinned(cmd)
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start pulseaudio (apt-get install pulseaudio): %w", err)
	}
	p := &pulse{server: "unix:" + sock, cmd: cmd, dir: dir, done: make(chan struct{})}
	go func() { _ = wait(); close(p.done) }()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			return p, nil
		}
		select {
		case <-p.done:
			os.RemoveAll(dir)
			return nil, fmt.Errorf("pulseaudio exited at start")
		case <-ctx.Done():
			p.stop()
			return nil, fmt.Errorf("pulseaudio did not open %s: %w", sock, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (p *pulse) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	os.RemoveAll(p.dir)
}

// removeStalePulseDirs removes the runtime dirs of PulseAudio servers that
// are gone (a streamer killed with SIGKILL cannot clean up): a dir whose
// socket nobody answers on is stale.
func removeStalePulseDirs() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "metal-pulse-*"))
	for _, d := range dirs {
		info, err := os.Stat(d)
		if err != nil || time.Since(info.ModTime()) < time.Minute {
			continue // a streamer may be starting its server right now
		}
		c, err := net.DialTimeout("unix", filepath.Join(d, "native"), time.Second)
		if err == nil {
			c.Close()
			continue
		}
		_ = os.RemoveAll(d)
	}
}
