package streamer

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// xvfb is an X server this streamer started.
type xvfb struct {
	cmd     *exec.Cmd
	display string
	done    chan struct{}
}

// startXvfb starts Xvfb at w x h and returns once it accepts connections.
// Xvfb picks a free display number itself and reports it on -displayfd.
func startXvfb(ctx context.Context, w, h int) (*xvfb, error) {
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("xvfb pipe: %w", err)
	}
	defer pr.Close()
	cmd := exec.Command("Xvfb", "-displayfd", "3", "-screen", "0", fmt.Sprintf("%dx%dx24", w, h),
		"-nolisten", "tcp", "-noreset", "+extension", "XTEST")
	cmd.ExtraFiles = []*os.File{pw}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	wait, err := startPinned(cmd)
	if err != nil {
		pw.Close()
		return nil, fmt.Errorf("start Xvfb (apt-get install xvfb): %w", err)
	}
	pw.Close()
	x := &xvfb{cmd: cmd, done: make(chan struct{})}
	go func() { _ = wait(); close(x.done) }()

	line := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(pr).ReadString('\n')
		line <- strings.TrimSpace(s)
	}()
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	select {
	case n := <-line:
		if n == "" {
			x.stop()
			return nil, fmt.Errorf("Xvfb exited without reporting a display")
		}
		x.display = ":" + n
		return x, nil
	case <-ctx.Done():
		x.stop()
		return nil, fmt.Errorf("Xvfb did not start: %w", ctx.Err())
	}
}

func (x *xvfb) stop() {
	_ = x.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-x.done:
	case <-time.After(5 * time.Second):
		_ = x.cmd.Process.Kill()
		<-x.done
	}
}
