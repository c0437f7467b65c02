package streamer

import (
	"os/exec"
	"runtime"
)

// startPinned starts cmd, whose SysProcAttr sets Pdeathsig, from an OS
// thread held for the child's whole life, and returns the child's Wait.
//
// Linux sends Pdeathsig when the *thread* that forked the child ends, not
// the process. A child started from a thread that later ends (one a
// locked goroutine held, or a C thread running a callback) would be killed
// at a random moment. Here the forking goroutine stays locked to its
// thread until the child has exited, so the signal comes only when the
// streamer itself dies (chromedp starts Chromium the same way).
func startPinned(cmd *exec.Cmd) (wait func() error, err error) {
	started := make(chan error, 1)
	exited := make(chan struct{})
	var waitErr error
	go func() {
		runtime.LockOSThread()
		// Never unlocked: the goroutine ends after the child, and its
		// thread with it.
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		waitErr = cmd.Wait()
		close(exited)
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	return func() error { <-exited; return waitErr }, nil
}
