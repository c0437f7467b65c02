package streamer

// The demo's stamp, for glass-to-glass: a 12-bit counter and a 4-bit check,
// drawn as 16 black or white cells at the top left of the screen, and read
// back from each decoded frame in the browser. The check is the XOR of the
// counter's three nibbles, inverted: a misread cell changes one nibble of
// the counter or the check, so the check fails and the frame is counted as
// a misread, never taken for another stamp; an all-black or all-white
// strip (no stamp yet, a blank frame) fails it too.
//
// The stamp is redrawn stampsPerFrame times per capture frame period, so a
// capture samples a stamp at most a quarter frame old: the phase between
// the drawing and the capture clocks, which at one stamp per frame adds up
// to a whole frame at random, stays under a quarter frame.

// stampsPerFrame is how many stamps are drawn per frame period.
const stampsPerFrame = 4

// stampRing is how many stamps are remembered (the counter's range): at
// 60 fps, 17 s of stamps.
const stampRing = 1 << 12

// stampCode is the 16-bit pattern for stamp n.
func stampCode(n uint32) uint16 {
	c := uint16(n % stampRing)
	return c<<4 | stampCheck(c)
}

func stampCheck(c uint16) uint16 { return ^(c ^ c>>4 ^ c>>8) & 0xf }

// stampCounter reads a pattern back: the counter, and whether the check
// holds.
func stampCounter(code uint16) (uint16, bool) {
	c := code >> 4
	return c, code&0xf == stampCheck(c)
}
