package streamer

import (
	"testing"
	"time"

	"github.com/pion/rtcp"
)

func TestRTTFromReport(t *testing.T) {
	sent := time.Unix(1_800_000_000, 0)
	now := sent.Add(130 * time.Millisecond)
	r := rtcp.ReceptionReport{LastSenderReport: ntpCompact(sent), Delay: uint32(100 * 65536 / 1000)} // 100 ms held
	rtt, ok := rttFromReport(r, now)
	if !ok || rtt < 29*time.Millisecond || rtt > 31*time.Millisecond {
		t.Fatalf("rtt = %v, %v; want about 30ms", rtt, ok)
	}
	if _, ok := rttFromReport(rtcp.ReceptionReport{}, now); ok {
		t.Fatal("rtt from a report without LSR")
	}
}
