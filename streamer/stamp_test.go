package streamer

import "testing"

// TestStampCheck: every stamp reads back as itself, and no stamp with one
// cell misread (or a blank strip) passes the check.
func TestStampCheck(t *testing.T) {
	for n := range uint32(stampRing) {
		code := stampCode(n)
		if c, ok := stampCounter(code); !ok || uint32(c) != n {
			t.Fatalf("stamp %d reads back as %d, %v", n, c, ok)
		}
		for bit := range 16 {
			if _, ok := stampCounter(code ^ 1<<bit); ok {
				t.Fatalf("stamp %d with cell %d misread passes the check", n, bit)
			}
		}
	}
	for _, blank := range []uint16{0x0000, 0xffff} {
		if _, ok := stampCounter(blank); ok {
			t.Errorf("blank strip %#04x passes the check", blank)
		}
	}
}
