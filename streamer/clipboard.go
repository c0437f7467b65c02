package streamer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/pion/webrtc/v4"
	"golang.org/x/time/rate"

	"github.com/metal-stream/metal/internal/token"
)

// The clipboard goes both ways as text on a data channel of its own,
// "clipboard", for the owner only (a spectator's is closed). Input
// messages stay small and fast; a clipboard can be a megabyte.
//
// Framing, the same both ways: a text is sent as chunks of at most
// clipChunk bytes, each one message whose first byte is '+' (more follow)
// or '=' (the last); the rest is UTF-8. The streamer answers a text it put
// in the session with "." once both X selections (CLIPBOARD, and PRIMARY
// for a middle click) hold it, so the player types the paste shortcut only
// then; a refused one with "!" and the reason.
//
// In the session, xclip owns the selections for the player's text and reads
// the one an X client took (XFixes reports each new owner: a copy, or a
// text selected for PRIMARY); a text the player sent is not sent back.

// MaxClipboard is the most text the clipboard carries either way, in bytes.
const MaxClipboard = 1 << 20

// clipChunk is the largest message: under every browser's SCTP message
// size limit.
const clipChunk = 16 << 10

// clipRate and clipBurst bound a peer's clipboard messages: a whole 1 MiB
// text (256 chunks of 4096 UTF-16 units, what the page sends) in one burst.
const (
	clipRate  = 300
	clipBurst = 400
)

// clipTimeout bounds one xclip run.
const clipTimeout = 5 * time.Second

var errClipboardTooLarge = fmt.Errorf("%w: clipboard text over %d bytes (1 MiB)", ErrBadInput, MaxClipboard)

// clipAssembler puts a text together from its chunks.
type clipAssembler struct {
	buf  []byte
	over bool // past MaxClipboard: dropped until its last chunk
	lost bool // a chunk was refused (rate limit): dropped until its last chunk
}

// drop refuses the text being put together: its chunks are dropped up to
// its last, so no text goes to the session with a hole in it.
func (a *clipAssembler) drop() { a.buf, a.lost = nil, true }

// add takes one message; done with the whole text after its last chunk.
// An oversized text, or one with a malformed or dropped chunk, is an error
// once its last chunk is in: one answer per text. A malformed message
// between texts is an error at once (done false).
func (a *clipAssembler) add(msg []byte) (text string, done bool, err error) {
	var bad error
	if len(msg) == 0 || (msg[0] != '+' && msg[0] != '=') {
		bad = fmt.Errorf("%w: clipboard message must start with '+' or '='", ErrBadInput)
	} else if len(msg)-1 > clipChunk {
		bad = fmt.Errorf("%w: clipboard chunk of %d bytes, limit %d", ErrBadInput, len(msg)-1, clipChunk)
	}
	if bad != nil {
		if a.buf == nil && !a.over && !a.lost {
			return "", false, bad
		}
		a.drop() // inside a text: refused whole at its end
		return "", false, nil
	}
	if !a.over && !a.lost {
		if len(a.buf)+len(msg)-1 > MaxClipboard {
			a.buf, a.over = nil, true
		} else {
			a.buf = append(a.buf, msg[1:]...)
		}
	}
	if msg[0] == '+' {
		return "", false, nil
	}
	buf, over, lost := a.buf, a.over, a.lost
	a.buf, a.over, a.lost = nil, false, false
	if over {
		return "", true, errClipboardTooLarge
	}
	if lost {
		return "", true, fmt.Errorf("%w: clipboard text dropped: a chunk was malformed or came past %d a second", ErrBadInput, clipRate)
	}
	if !utf8.Valid(buf) {
		return "", true, fmt.Errorf("%w: clipboard text is not UTF-8", ErrBadInput)
	}
	return string(buf), true, nil
}

// clipChunks frames text for sending.
func clipChunks(text string) []string {
	var out []string
	for len(text) > clipChunk {
		// Cut at a rune boundary, so every chunk is valid UTF-8 text.
		n := clipChunk
		for n > 0 && !utf8.RuneStart(text[n]) {
			n--
		}
		out = append(out, "+"+text[:n])
		text = text[n:]
	}
	return append(out, "="+text)
}

// sessionClipboard is the X side: xclip on the session's display.
type sessionClipboard struct {
	display string

	mu   sync.Mutex // one xclip exchange at a time
	last string     // the text either side set last: not echoed back
}

// set puts text in both selections and returns once they hold it.
func (c *sessionClipboard) set(ctx context.Context, text string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, sel := range []string{"clipboard", "primary"} {
		// xclip takes the selection, then forks to serve it until another
		// client takes it; the parent's exit is the signal it is there.
		// Its output is not read: the child would hold a pipe open.
		cmd := c.xclip(ctx, "-selection", sel, "-in")
		cmd.Stdin = bytes.NewReader([]byte(text))
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("xclip -selection %s -in: %w", sel, err)
		}
	}
	c.last = text
	return nil
}

// get reads a selection's text; changed is false when it is the text last
// set or sent (the player's own, coming back).
func (c *sessionClipboard) get(ctx context.Context, sel string) (text string, changed bool, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []byte
	latin1 := false
	for _, target := range []string{"UTF8_STRING", "STRING"} {
		latin1 = target == "STRING"
		cmd := c.xclip(ctx, "-selection", sel, "-out", "-target", target)
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			return "", false, err
		}
		if err = cmd.Start(); err != nil {
			return "", false, fmt.Errorf("xclip (apt-get install xclip): %w", err)
		}
		out, err = io.ReadAll(io.LimitReader(stdout, MaxClipboard+1))
		_, _ = io.Copy(io.Discard, stdout)
		if werr := cmd.Wait(); err == nil && werr == nil {
			break
		}
		out = nil
	}
	if out == nil {
		return "", false, nil // no owner, or no text
	}
	if len(out) > MaxClipboard {
		return "", false, errClipboardTooLarge
	}
	if latin1 {
		// STRING is ISO Latin-1 (ICCCM): each byte is its code point.
		r := make([]rune, len(out))
		for i, c := range out {
			r[i] = rune(c)
		}
		out = []byte(string(r))
	}
	if len(out) > MaxClipboard {
		return "", false, errClipboardTooLarge // Latin-1 grows in UTF-8
	}
	text = string(bytes.ToValidUTF8(out, []byte("\uFFFD")))
	if text == c.last {
		return text, false, nil
	}
	c.last = text
	return text, true, nil
}

func (c *sessionClipboard) xclip(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "xclip", args...)
	cmd.Env = append(os.Environ(), "DISPLAY="+c.display)
	cmd.WaitDelay = time.Second
	return cmd
}

// handleClipboard serves a peer's clipboard channel: the owner's texts go
// to the session; a spectator's channel is closed.
func (s *Server) handleClipboard(p *peer, dc *webrtc.DataChannel) {
	if p.role != token.RoleOwner || s.clip == nil {
		p.log.Info("clipboard channel closed", "reason", map[bool]string{true: "not the owner", false: "no clipboard"}[p.role != token.RoleOwner])
		_ = dc.Close()
		return
	}
	if !p.claim(&p.clipDC, dc) {
		_ = dc.Close()
		return
	}
	var asm clipAssembler
	texts := make(chan string, 1)
	// A text's answer is always sent (at most one per last chunk, which
	// the limiter bounds): the page counts them before it types a paste.
	// Malformed messages between texts are answered at a bounded rate.
	answer := func(msg string) { _ = dc.SendText(msg) }
	reply := func(msg string) {
		if p.refusals.Allow() {
			_ = dc.SendText(msg)
		}
	}
	limit := rate.NewLimiter(clipRate, clipBurst)
	dc.OnMessage(func(msg webrtc.DataChannelMessage) {
		if !limit.Allow() {
			asm.drop()
			if len(msg.Data) > 0 && msg.Data[0] == '=' {
				_, _, err := asm.add([]byte("=")) // the dropped text's end: refused
				s.metrics.clipboard.WithLabelValues("in", "refused").Inc()
				answer("!" + err.Error())
			}
			return
		}
		text, done, err := asm.add(msg.Data)
		if err != nil {
			s.metrics.clipboard.WithLabelValues("in", "refused").Inc()
			if done {
				answer("!" + err.Error())
			} else {
				reply("!" + err.Error())
			}
			return
		}
		if !done {
			return
		}
		// xclip runs off pion's read loop; a newer text replaces one
		// still waiting, which is answered as replaced (the page counts
		// answers before it types a paste shortcut).
		select {
		case <-texts:
			answer("!clipboard text replaced by a newer one")
		default:
		}
		texts <- text
	})
	go func() {
		for {
			select {
			case <-p.done:
				return
			case text := <-texts:
				ctx, cancel := context.WithTimeout(context.Background(), clipTimeout)
				err := s.clip.set(ctx, text)
				cancel()
				if err != nil {
					s.metrics.clipboard.WithLabelValues("in", "failed").Inc()
					p.log.Warn("clipboard not set in the session", "err", err)
					_ = dc.SendText("!" + err.Error())
					continue
				}
				s.metrics.clipboard.WithLabelValues("in", "ok").Inc()
				_ = dc.SendText(".")
			}
		}
	}()
}

// selectionChanged sends a selection an X client took to the owner's
// players.
func (s *Server) selectionChanged(sel string) {
	ctx, cancel := context.WithTimeout(context.Background(), clipTimeout)
	defer cancel()
	text, changed, err := s.clip.get(ctx, sel)
	if errors.Is(err, errClipboardTooLarge) {
		s.log.Info("session clipboard not sent: over 1 MiB", "selection", sel)
		s.metrics.clipboard.WithLabelValues("out", "refused").Inc()
		return
	}
	if err != nil || !changed || text == "" {
		return
	}
	for _, p := range s.peersWhere(func(p *peer) bool { return p.role == token.RoleOwner }) {
		p.inputMu.Lock()
		dc := p.clipDC
		p.inputMu.Unlock()
		if dc == nil || dc.ReadyState() != webrtc.DataChannelStateOpen {
			continue
		}
		for _, chunk := range clipChunks(text) {
			if err := dc.SendText(chunk); err != nil {
				break
			}
		}
		s.metrics.clipboard.WithLabelValues("out", "ok").Inc()
	}
}
