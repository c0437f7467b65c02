package netlab

import (
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// DelayLink links namespaces a and b ("" is the caller's) point to point
// through a pair of TUN devices, with a fixed one-way delay in each
// direction (so the round trip is twice that): devA carries ipA and sees
// ipB as its peer, and the other way round.
func (l *Lab) DelayLink(a, devA, ipA, b, devB, ipB string, oneWay time.Duration) error {
	ta, err := openTUN(a, devA)
	if err != nil {
		return err
	}
	tb, err := openTUN(b, devB)
	if err != nil {
		ta.Close()
		return err
	}
	for _, s := range []struct{ ns, dev, local, peer string }{{a, devA, ipA, ipB}, {b, devB, ipB, ipA}} {
		if err := ipIn(s.ns, "addr", "add", s.local, "peer", s.peer, "dev", s.dev); err != nil {
			ta.Close()
			tb.Close()
			return err
		}
		if err := ipIn(s.ns, "link", "set", s.dev, "up"); err != nil {
			ta.Close()
			tb.Close()
			return err
		}
	}
	d := &delayLink{a: ta, b: tb, delay: oneWay, done: make(chan struct{})}
	d.wg.Add(4)
	go d.pump(ta, tb)
	go d.pump(tb, ta)
	l.mu.Lock()
	l.links = append(l.links, d)
	l.mu.Unlock()
	return nil
}

type delayLink struct {
	a, b  *os.File
	delay time.Duration
	done  chan struct{}
	once  sync.Once
	wg    sync.WaitGroup
}

type packet struct {
	data []byte
	due  time.Time
}

// pump reads packets from src and writes each to dst once its delay has
// passed, in order.
func (d *delayLink) pump(src, dst *os.File) {
	q := make(chan packet, 8192)
	go func() {
		defer d.wg.Done()
		for p := range q {
			if wait := time.Until(p.due); wait > 0 {
				select {
				case <-time.After(wait):
				case <-d.done:
					return
				}
			}
			_, _ = dst.Write(p.data)
		}
	}()
	defer d.wg.Done()
	defer close(q)
	buf := make([]byte, 65536)
	for {
		n, err := src.Read(buf)
		if err != nil {
			return
		}
		p := packet{data: append([]byte(nil), buf[:n]...), due: time.Now().Add(d.delay)}
		select {
		case q <- p:
		default: // queue full: drop, as a congested link would
		}
	}
}

func (d *delayLink) close() {
	d.once.Do(func() {
		close(d.done)
		d.a.Close()
		d.b.Close()
		d.wg.Wait()
	})
}

// inNamespace runs f on a thread that has entered namespace ns ("" is the
// caller's), then moves the thread back. Only if it cannot go back does the
// thread stay locked, so that Go retires it rather than reuse it in the
// wrong namespace. (A retired thread also fires the parent-death signal of
// every process it started, so retiring threads is avoided.) Sockets and
// devices f opens stay in ns whichever thread uses them afterwards.
func inNamespace(ns string, f func() error) error {
	if ns == "" {
		return f()
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		home, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer home.Close()
		nsf, err := os.Open("/run/netns/" + ns)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer nsf.Close()
		if err := unix.Setns(int(nsf.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("setns %s: %w", ns, err)
			return
		}
		ferr := f()
		if err := unix.Setns(int(home.Fd()), unix.CLONE_NEWNET); err == nil {
			runtime.UnlockOSThread()
		}
		errc <- ferr
	}()
	return <-errc
}

// openTUN creates TUN device name in namespace ns ("" is the caller's) and
// returns it, non-blocking so reads stop when it is closed.
func openTUN(ns, name string) (*os.File, error) {
	var f *os.File
	err := inNamespace(ns, func() error {
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open /dev/net/tun: %w", err)
		}
		ifr, err := unix.NewIfreq(name)
		if err == nil {
			ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
			err = unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr)
		}
		if err == nil {
			err = unix.SetNonblock(fd, true)
		}
		if err != nil {
			unix.Close(fd)
			return fmt.Errorf("tun %s: %w", name, err)
		}
		f = os.NewFile(uintptr(fd), name)
		return nil
	})
	if err == nil && f == nil {
		err = errors.New("tun: no file")
	}
	return f, err
}

// ListenPacketIn opens a packet listener inside namespace ns.
func ListenPacketIn(ns, network, addr string) (net.PacketConn, error) {
	var c net.PacketConn
	err := inNamespace(ns, func() error {
		var err error
		c, err = net.ListenPacket(network, addr)
		return err
	})
	return c, err
}
