package streamer

import (
	"time"

	"github.com/pion/rtcp"
)

// ntpCompact is the middle 32 bits of the NTP timestamp of t (RFC 3550,
// section 6.4.1), the unit of LSR and DLSR in receiver reports.
func ntpCompact(t time.Time) uint32 {
	secs := uint64(t.Unix()) + 2208988800
	frac := uint64(t.Nanosecond()) << 32 / 1e9
	return uint32((secs<<32 | frac) >> 16)
}

// rttFromReport computes the round-trip time from a reception report
// received at now; ok is false when the report carries no sender report.
func rttFromReport(r rtcp.ReceptionReport, now time.Time) (time.Duration, bool) {
	if r.LastSenderReport == 0 {
		return 0, false
	}
	d := ntpCompact(now) - r.LastSenderReport - r.Delay
	if int32(d) < 0 {
		return 0, false
	}
	return time.Duration(uint64(d) * uint64(time.Second) >> 16), true
}
