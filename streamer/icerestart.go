package streamer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v4"
)

// ICE restart (WHEP, as WHIP's RFC 9725 section 4.3.2): when the network
// changes under a player, or drops for a while, the page restarts ICE on
// the same peer: it PATCHes its WHEP resource with an SDP fragment
// (application/trickle-ice-sdpfrag) holding its new ice-ufrag and ice-pwd
// and its candidates; the streamer restarts the peer's ICE transport with
// them and answers 200 with a fragment of its own: its new credentials and
// every candidate (no trickle). The peer, its tracks, data channels and
// session stay; only the ICE transport starts over. A fragment without
// credentials (trickled candidates alone) is refused: the answer to the
// offer already carried every candidate.

// sdpFragType is the PATCH body's content type.
const sdpFragType = "application/trickle-ice-sdpfrag"

// maxFragBytes bounds a PATCH body.
const maxFragBytes = 16 << 10

// iceChars are what ice-ufrag and ice-pwd may hold (RFC 8839 ice-char).
var iceChars = regexp.MustCompile(`^[A-Za-z0-9+/]+$`)

// errTrickleOnly refuses a fragment without credentials (422).
var errTrickleOnly = errors.New("no ice-ufrag and ice-pwd: only an ICE restart is taken (the answer carried every candidate, so trickled ones are not)")

// iceFrag is what a fragment carries.
type iceFrag struct {
	ufrag, pwd string
	candidates []string // "candidate:..." attribute values
}

// parseFrag reads an SDP fragment: a=ice-ufrag, a=ice-pwd and
// a=candidate lines, wherever they are; other lines are ignored.
func parseFrag(b []byte) (iceFrag, error) {
	var f iceFrag
	for _, line := range strings.Split(strings.ReplaceAll(string(b), "\r\n", "\n"), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "a=ice-ufrag:"):
			if f.ufrag == "" {
				f.ufrag = strings.TrimPrefix(line, "a=ice-ufrag:")
			}
		case strings.HasPrefix(line, "a=ice-pwd:"):
			if f.pwd == "" {
				f.pwd = strings.TrimPrefix(line, "a=ice-pwd:")
			}
		case strings.HasPrefix(line, "a=candidate:"):
			if len(f.candidates) >= 64 {
				return f, fmt.Errorf("more than 64 candidates")
			}
			c := strings.TrimPrefix(line, "a=")
			// Parsed here, so that the restart cannot fail on one half
			// way (the peer would be left waiting for an answer).
			if _, err := ice.UnmarshalCandidate(c); err != nil {
				return f, fmt.Errorf("candidate %.60q: %v", c, err)
			}
			f.candidates = append(f.candidates, c)
		}
	}
	if f.ufrag == "" || f.pwd == "" {
		return f, errTrickleOnly
	}
	if len(f.ufrag) < 4 || len(f.ufrag) > 256 || !iceChars.MatchString(f.ufrag) {
		return f, fmt.Errorf("ice-ufrag %.40q: want 4 to 256 ICE characters", f.ufrag)
	}
	if len(f.pwd) < 22 || len(f.pwd) > 256 || !iceChars.MatchString(f.pwd) {
		return f, fmt.Errorf("ice-pwd: want 22 to 256 ICE characters")
	}
	return f, nil
}

// restartOffer is the peer's last offer with the fragment's credentials and
// candidates (in the first media section: the bundle's transport).
func restartOffer(old string, f iceFrag) (string, error) {
	var d sdp.SessionDescription
	if err := d.UnmarshalString(old); err != nil {
		return "", err
	}
	keep := func(attrs []sdp.Attribute) []sdp.Attribute {
		var out []sdp.Attribute
		for _, a := range attrs {
			switch a.Key {
			case "ice-ufrag", "ice-pwd", "candidate", "end-of-candidates":
			default:
				out = append(out, a)
			}
		}
		return out
	}
	// The candidates go in the section whose transport the bundle uses
	// (its first mid), the first section without a bundle.
	bundle := ""
	if g, ok := d.Attribute("group"); ok && strings.HasPrefix(g, "BUNDLE ") {
		if mids := strings.Fields(g)[1:]; len(mids) > 0 {
			bundle = mids[0]
		}
	}
	d.Attributes = keep(d.Attributes)
	for i, m := range d.MediaDescriptions {
		mid, _ := m.Attribute("mid")
		m.Attributes = append(keep(m.Attributes),
			sdp.Attribute{Key: "ice-ufrag", Value: f.ufrag}, sdp.Attribute{Key: "ice-pwd", Value: f.pwd})
		if (bundle == "" && i == 0) || (bundle != "" && mid == bundle) {
			for _, c := range f.candidates {
				m.Attributes = append(m.Attributes, sdp.Attribute{Key: "candidate", Value: strings.TrimPrefix(c, "candidate:")})
			}
			m.Attributes = append(m.Attributes, sdp.Attribute{Key: "end-of-candidates"})
		}
	}
	b, err := d.Marshal()
	return string(b), err
}

// answerFrag is the fragment of an answer a PATCH returns: credentials,
// then each media section's mid and candidates.
func answerFrag(answer string) (string, error) {
	var d sdp.SessionDescription
	if err := d.UnmarshalString(answer); err != nil {
		return "", err
	}
	var b strings.Builder
	ufrag, pwd := "", ""
	for _, m := range d.MediaDescriptions {
		if v, ok := m.Attribute("ice-ufrag"); ok && ufrag == "" {
			ufrag = v
		}
		if v, ok := m.Attribute("ice-pwd"); ok && pwd == "" {
			pwd = v
		}
	}
	fmt.Fprintf(&b, "a=ice-ufrag:%s\r\na=ice-pwd:%s\r\n", ufrag, pwd)
	for _, m := range d.MediaDescriptions {
		mid, _ := m.Attribute("mid")
		fmt.Fprintf(&b, "m=%s 9 %s %s\r\na=mid:%s\r\n", m.MediaName.Media, strings.Join(m.MediaName.Protos, "/"),
			strings.Join(m.MediaName.Formats, " "), mid)
		for _, a := range m.Attributes {
			if a.Key == "candidate" {
				fmt.Fprintf(&b, "a=candidate:%s\r\n", a.Value)
			}
		}
	}
	return b.String(), nil
}

// whepPatch restarts ICE on a WHEP session. Like DELETE, only its creator
// can (the resource URL and the role), with a single-use token.
func (s *Server) whepPatch(w http.ResponseWriter, r *http.Request) {
	claims, ok := s.authorizeOnce(w, r)
	if !ok {
		return
	}
	s.mu.Lock()
	p, found := s.peers[r.PathValue("id")]
	s.mu.Unlock()
	if !found || p.role != claims.Role {
		httpError(w, http.StatusNotFound, "no such WHEP session")
		return
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != sdpFragType {
		httpError(w, http.StatusUnsupportedMediaType, "Content-Type must be %s", sdpFragType)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxFragBytes+1))
	if err != nil || len(body) > maxFragBytes {
		httpError(w, http.StatusRequestEntityTooLarge, "SDP fragment over %d bytes", maxFragBytes)
		return
	}
	f, err := parseFrag(body)
	if errors.Is(err, errTrickleOnly) {
		httpError(w, http.StatusUnprocessableEntity, "SDP fragment: %v", err)
		return
	}
	if err != nil {
		httpError(w, http.StatusBadRequest, "SDP fragment: %v", err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	frag, err := p.restartICE(ctx, f)
	if err != nil {
		p.log.Warn("ICE restart refused", "err", err)
		httpError(w, http.StatusBadRequest, "ICE restart: %v", err)
		return
	}
	s.metrics.iceRestarts.Inc()
	p.log.Info("ICE restarted")
	w.Header().Set("Content-Type", sdpFragType)
	w.WriteHeader(http.StatusOK)
	_, _ = io.WriteString(w, frag)
}

// restartICE applies the fragment to the peer as a new offer and returns
// the answer's fragment, once its candidates are gathered. One at a time
// per peer.
func (p *peer) restartICE(ctx context.Context, f iceFrag) (string, error) {
	p.restartMu.Lock()
	defer p.restartMu.Unlock()
	remote := p.pc.RemoteDescription()
	if remote == nil || p.pc.SignalingState() != webrtc.SignalingStateStable {
		return "", fmt.Errorf("the peer is not ready for one (%s)", p.pc.SignalingState())
	}
	if strings.Contains(remote.SDP, "a=ice-ufrag:"+f.ufrag+"\r\n") {
		return "", fmt.Errorf("the ice-ufrag is the one in use: a restart needs new credentials")
	}
	offer, err := restartOffer(remote.SDP, f)
	if err != nil {
		return "", err
	}
	if err := p.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: offer}); err != nil {
		return "", err
	}
	answer, err := p.pc.CreateAnswer(nil)
	if err != nil {
		return "", err
	}
	gathered := webrtc.GatheringCompletePromise(p.pc)
	if err := p.pc.SetLocalDescription(answer); err != nil {
		return "", err
	}
	select {
	case <-gathered:
	case <-ctx.Done():
		// The agent has restarted: answer with what is gathered, rather
		// than leave the peer without an answer.
		p.log.Warn("ICE restart answered before gathering completed", "err", ctx.Err())
	}
	return answerFrag(p.pc.LocalDescription().SDP)
}
