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

// openTUN creates TUN device name in namespace ns ("" is the caller's) and
// returns it, non-blocking so reads stop when it is closed.
func openTUN(ns, name string) (*os.File, error) {
	type result struct {
		f   *os.File
		err error
	}
	ch := make(chan result, 1)
	go func() {
		// This thread may enter another namespace: lock it and never unlock,
		// so Go retires it instead of reusing it.
		runtime.LockOSThread()
		if ns != "" {
			nsf, err := os.Open("/run/netns/" + ns)
			if err != nil {
				ch <- result{err: err}
				return
			}
			defer nsf.Close()
			if err := unix.Setns(int(nsf.Fd()), unix.CLONE_NEWNET); err != nil {
				ch <- result{err: fmt.Errorf("setns %s: %w", ns, err)}
				return
			}
		}
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			ch <- result{err: fmt.Errorf("open /dev/net/tun: %w", err)}
			return
		}
		ifr, err := unix.NewIfreq(name)
		if err != nil {
			unix.Close(fd)
			ch <- result{err: err}
			return
		}
		ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
		if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
			unix.Close(fd)
			ch <- result{err: fmt.Errorf("TUNSETIFF %s: %w", name, err)}
			return
		}
		if err := unix.SetNonblock(fd, true); err != nil {
			unix.Close(fd)
			ch <- result{err: err}
			return
		}
		ch <- result{f: os.NewFile(uintptr(fd), name)}
	}()
	r := <-ch
	if r.f == nil && r.err == nil {
		r.err = errors.New("tun: no file")
	}
	return r.f, r.err
}

// ListenPacketIn opens a packet listener inside namespace ns: the socket
// stays in that namespace whichever thread uses it afterwards.
func ListenPacketIn(ns, network, addr string) (net.PacketConn, error) {
	type result struct {
		c   net.PacketConn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread is retired
		nsf, err := os.Open("/run/netns/" + ns)
		if err != nil {
			ch <- result{err: err}
			return
		}
		defer nsf.Close()
		if err := unix.Setns(int(nsf.Fd()), unix.CLONE_NEWNET); err != nil {
			ch <- result{err: fmt.Errorf("setns %s: %w", ns, err)}
			return
		}
		c, err := net.ListenPacket(network, addr)
		ch <- result{c, err}
	}()
	r := <-ch
	return r.c, r.err
}
