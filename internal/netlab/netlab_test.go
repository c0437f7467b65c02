package netlab

import (
	"net"
	"os"
	"testing"
	"time"

	"github.com/metal-stream/metal/internal/browsertest"
)

func TestMain(m *testing.M) {
	browsertest.EnterNetns()
	os.Exit(m.Run())
}

// TestDelayLink measures the round trip over a 20 ms one-way delay line to
// a UDP echo in another namespace.
func TestDelayLink(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("netlab needs root")
		}
		t.Skip("netlab needs root")
	}
	l := New()
	defer l.Close()
	far, err := l.Namespace("far")
	if err != nil {
		t.Fatal(err)
	}
	if err := l.DelayLink("", "tdl0", "198.18.200.1", far, "tdl1", "198.18.200.2", 20*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	echo, err := ListenPacketIn(far, "udp4", "198.18.200.2:0")
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := echo.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = echo.WriteTo(buf[:n], from)
		}
	}()
	c, err := net.Dial("udp4", echo.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var best time.Duration = time.Hour
	for range 5 {
		start := time.Now()
		if _, err := c.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Read(make([]byte, 10)); err != nil {
			t.Fatalf("no echo over the delay line: %v", err)
		}
		best = min(best, time.Since(start))
	}
	if best < 40*time.Millisecond || best > 200*time.Millisecond {
		t.Fatalf("best round trip %v over a 20 ms one-way delay line, want about 40 ms", best)
	}
	t.Logf("round trip %v", best)
}
