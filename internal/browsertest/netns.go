package browsertest

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
)

const netnsEnv = "METAL_TEST_NETNS"

// MainInNetns runs the test binary again inside a new network namespace
// (unshare -n) with only lo up, so WebRTC between Chromium and the code
// under test never touches a real interface. Call it from TestMain. Where the
// namespace cannot be made (not root, no unshare) the tests run in place, on
// loopback addresses only, unless CI=true, where that is an error.
func MainInNetns(m *testing.M) {
	EnterNetns()
	os.Exit(m.Run())
}

// EnterNetns is MainInNetns for a TestMain that does more: in the parent it
// runs the test binary again in a new network namespace and exits with its
// code; in that child (or where no namespace can be made) it returns.
func EnterNetns() {
	if os.Getenv(netnsEnv) == "1" {
		return
	}
	unshare, err := exec.LookPath("unshare")
	if err == nil && os.Geteuid() == 0 {
		self, err := os.Executable()
		if err == nil {
			args := append([]string{"-n", "--", "sh", "-c", `ip link set lo up && exec "$0" "$@"`, self}, os.Args[1:]...)
			cmd := exec.Command(unshare, args...)
			cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
			cmd.Env = append(os.Environ(), netnsEnv+"=1")
			if err := cmd.Run(); err != nil {
				if ee, ok := err.(*exec.ExitError); ok {
					os.Exit(ee.ExitCode())
				}
				fmt.Fprintf(os.Stderr, "browsertest: unshare -n: %v\n", err)
				os.Exit(1)
			}
			os.Exit(0)
		}
	}
	if os.Getenv("CI") == "true" {
		fmt.Fprintln(os.Stderr, "browsertest: CI=true but no network namespace could be made (need root and unshare)")
		os.Exit(1)
	}
}
