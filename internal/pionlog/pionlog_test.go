package pionlog

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// TestLimitedDropsAndCounts: beyond the rate, lines are dropped and the
// next line that passes says how many; below the level nothing is
// formatted at all.
func TestLimitedDropsAndCounts(t *testing.T) {
	var buf bytes.Buffer
	f := Limited(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo})), 1, 3)
	l := f.NewLogger("turn")
	for range 100 {
		l.Infof("permission denied for client %s", "x")
	}
	if n := strings.Count(buf.String(), "permission denied"); n != 3 {
		t.Fatalf("%d lines written of 100 at a burst of 3", n)
	}
	l.Debugf("never formatted %v", formatPanics{})
	time.Sleep(1100 * time.Millisecond) // one token back at 1/s
	l.Info("after the flood")
	if !strings.Contains(buf.String(), "suppressed_before=97") {
		t.Fatalf("no count of the dropped lines:\n%s", buf.String())
	}
}

type formatPanics struct{}

func (formatPanics) String() string { panic("a debug line below the level was formatted") }
