// Package netlab builds small networks of test hosts out of Linux network
// namespaces, for whole-system tests: named namespaces, point-to-point links
// between them (veth, or a TUN pair with a fixed one-way delay), addresses
// and routes. Everything it creates it removes, and it ends the processes
// left in its namespaces. It needs root and iproute2.
//
// Delays come from a userspace delay line rather than tc netem, because
// kernels built without sch_netem (this project's CI among them) have no
// netem qdisc.
package netlab

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Lab is a set of namespaces and links owned by one test.
type Lab struct {
	prefix string
	mu     sync.Mutex
	ns     []string
	links  []*delayLink
}

// New returns an empty lab whose namespace names start with a unique prefix.
func New() *Lab {
	return &Lab{prefix: fmt.Sprintf("metal%d-", os.Getpid()%100000)}
}

// Namespace creates a named network namespace with lo up and returns its
// full name (for `ip netns exec`).
func (l *Lab) Namespace(name string) (string, error) {
	full := l.prefix + name
	if err := ip("netns", "add", full); err != nil {
		return "", err
	}
	l.mu.Lock()
	l.ns = append(l.ns, full)
	l.mu.Unlock()
	return full, ip("-n", full, "link", "set", "lo", "up")
}

// Adopt names the network namespace of process pid (a container the test
// started) for `ip netns exec` and the lab's other calls, and returns the
// name. Close ends its processes too and removes the name.
func (l *Lab) Adopt(name string, pid int) (string, error) {
	full := l.prefix + name
	if err := ip("netns", "attach", full, strconv.Itoa(pid)); err != nil {
		return "", err
	}
	l.mu.Lock()
	l.ns = append(l.ns, full)
	l.mu.Unlock()
	return full, nil
}

// Close ends every process in the lab's namespaces (SIGKILL), stops the
// delay lines and deletes the namespaces.
func (l *Lab) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	var errs []string
	for _, ns := range l.ns {
		l.killAll(ns)
	}
	for _, d := range l.links {
		d.close()
	}
	for _, ns := range l.ns {
		if err := ip("netns", "del", ns); err != nil {
			errs = append(errs, err.Error())
		}
	}
	l.ns, l.links = nil, nil
	if len(errs) > 0 {
		return fmt.Errorf("netlab close: %s", strings.Join(errs, "; "))
	}
	return nil
}

// Kill ends every process in namespace ns: a site dying at once.
func (l *Lab) Kill(ns string) { l.killAll(ns) }

func (l *Lab) killAll(ns string) {
	out, _ := exec.Command("ip", "netns", "pids", ns).Output()
	for _, f := range strings.Fields(string(out)) {
		if pid, err := strconv.Atoi(f); err == nil {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	time.Sleep(50 * time.Millisecond)
}

// Addr adds addr (CIDR) to dev in namespace ns ("" is the caller's).
func (l *Lab) Addr(ns, dev, cidr string) error { return ipIn(ns, "addr", "add", cidr, "dev", dev) }

// AddLoopbackHosts adds each IPv4 address as a /32 to lo of the caller's
// namespace: test hosts for a test that has a namespace of its own. It is
// idempotent: a fuzz worker runs TestMain again in the same namespace.
func AddLoopbackHosts(ips ...string) error {
	for _, ip := range ips {
		if err := ipIn("", "addr", "replace", ip+"/32", "dev", "lo"); err != nil {
			return err
		}
	}
	return nil
}

// Route adds a route to dst via gateway in namespace ns.
func (l *Lab) Route(ns, dst, via string) error { return ipIn(ns, "route", "add", dst, "via", via) }

// RouteDev adds a route to dst through dev (a point-to-point link) in ns.
func (l *Lab) RouteDev(ns, dst, dev string) error { return ipIn(ns, "route", "add", dst, "dev", dev) }

// Forwarding turns IPv4 forwarding on in namespace ns.
func (l *Lab) Forwarding(ns string) error {
	return run(append(nsPrefix(ns), "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")...)
}

// Veth links namespaces a and b ("" is the caller's) with a veth pair:
// devA gets ipA, devB gets ipB (both CIDR, same subnet).
func (l *Lab) Veth(a, devA, ipA, b, devB, ipB string) error {
	args := []string{"link", "add", devA, "type", "veth", "peer", "name", devB}
	if b != "" {
		args = append(args, "netns", b)
	}
	if err := ipIn(a, args...); err != nil {
		return err
	}
	for _, s := range []struct{ ns, dev, ip string }{{a, devA, ipA}, {b, devB, ipB}} {
		if err := ipIn(s.ns, "addr", "add", s.ip, "dev", s.dev); err != nil {
			return err
		}
		if err := ipIn(s.ns, "link", "set", s.dev, "up"); err != nil {
			return err
		}
	}
	return nil
}

func nsPrefix(ns string) []string {
	if ns == "" {
		return nil
	}
	return []string{"ip", "netns", "exec", ns}
}

func ipIn(ns string, args ...string) error {
	if ns != "" {
		args = append([]string{"-n", ns}, args...)
	}
	return ip(args...)
}

func ip(args ...string) error { return run(append([]string{"ip"}, args...)...) }

func run(args ...string) error {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
