package localcluster

import (
	"bufio"
	"fmt"
	"os"
	"sort"
	"strings"
	"syscall"
)

// unmountUnder detaches every mount below dir. A Nomad client mounts tmpfs
// secrets and private directories into each allocation directory, and they
// outlive the agent until the allocation is garbage collected.
func unmountUnder(dir string) error {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return fmt.Errorf("read mounts: %w", err)
	}
	defer f.Close()
	var targets []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		if mp := fields[4]; strings.HasPrefix(mp, dir+"/") {
			targets = append(targets, mp)
		}
	}
	// Deepest first.
	sort.Sort(sort.Reverse(sort.StringSlice(targets)))
	for _, t := range targets {
		if err := syscall.Unmount(t, syscall.MNT_DETACH); err != nil {
			return fmt.Errorf("unmount %s: %w", t, err)
		}
	}
	return nil
}
