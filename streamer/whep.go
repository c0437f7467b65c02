package streamer

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"time"

	"github.com/pion/sdp/v3"

	"github.com/metal-stream/metal/internal/token"
)

// WHEP (draft-ietf-wish-whep), the playback twin of WHIP (RFC 9725): the
// browser POSTs an SDP offer, the streamer answers 201 with the SDP answer
// and a Location for the session, and DELETE on that Location ends it.
// PATCH restarts ICE on the same peer (icerestart.go); trickled
// candidates alone are not taken: the answer carries every candidate.

const (
	maxOfferBytes = 64 << 10
	maxPeers      = 8
)

// httpError writes a plain-text error a person can read.
func httpError(w http.ResponseWriter, code int, format string, a ...any) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(code)
	fmt.Fprintf(w, format+"\n", a...)
}

// authorize checks the bearer token against this streamer's session.
func (s *Server) authorize(w http.ResponseWriter, r *http.Request) (token.Claims, bool) {
	return s.authorizeAt(w, r, time.Now())
}

// authorizeAt is authorize at now (one clock reading for a whole request).
func (s *Server) authorizeAt(w http.ResponseWriter, r *http.Request, now time.Time) (token.Claims, bool) {
	auth := r.Header.Get("Authorization")
	tok, ok := strings.CutPrefix(auth, "Bearer ")
	if !ok || tok == "" {
		w.Header().Set("WWW-Authenticate", `Bearer realm="metal"`)
		httpError(w, http.StatusUnauthorized, "missing session token: send Authorization: Bearer <token>")
		return token.Claims{}, false
	}
	c, err := s.signer.Verify(tok, now)
	if err != nil {
		w.Header().Set("WWW-Authenticate", `Bearer realm="metal", error="invalid_token"`)
		httpError(w, http.StatusUnauthorized, "invalid session token: %v", err)
		return token.Claims{}, false
	}
	if c.Session != s.cfg.SessionID {
		w.Header().Set("WWW-Authenticate", `Bearer realm="metal", error="invalid_token"`)
		httpError(w, http.StatusForbidden, "token is for another session")
		return token.Claims{}, false
	}
	return c, true
}

func (s *Server) whepPost(w http.ResponseWriter, r *http.Request) {
	now := time.Now()
	claims, ok := s.authorizeAt(w, r, now)
	if !ok {
		return
	}
	if s.cfg.SingleUseTokens && claims.ID == "" {
		w.Header().Set("WWW-Authenticate", `Bearer realm="metal", error="invalid_token"`)
		httpError(w, http.StatusUnauthorized, "a single-use session token is required")
		return
	}
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/sdp" {
		httpError(w, http.StatusUnsupportedMediaType, "Content-Type must be application/sdp")
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxOfferBytes+1))
	if err != nil {
		httpError(w, http.StatusBadRequest, "read offer: %v", err)
		return
	}
	if len(body) > maxOfferBytes {
		httpError(w, http.StatusRequestEntityTooLarge, "SDP offer larger than %d bytes", maxOfferBytes)
		return
	}
	offer, err := checkOffer(body)
	if err != nil {
		httpError(w, http.StatusBadRequest, "invalid SDP offer: %v", err)
		return
	}
	// A single-use token (the gateway mints only those) is spent here, on
	// the first POST that gets this far; a replay is refused.
	if claims.ID != "" && !s.spend(claims, now) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="metal", error="invalid_token"`)
		httpError(w, http.StatusUnauthorized, "session token already used")
		return
	}
	// The codec: an H.264 profile (or VP8) the browser decodes the stream
	// with, or a 400 saying what it offered instead.
	s.mu.Lock()
	stream := s.branch
	s.mu.Unlock()
	var fmtp string
	if stream.Encoder != "" {
		if fmtp, err = answerFmtp(offer, stream); err != nil {
			httpError(w, http.StatusBadRequest, "SDP offer: %v", err)
			return
		}
	}
	// The peer limit holds under concurrent offers: a slot is taken before
	// the (slow) answer and given back unless a peer takes it. Spectators
	// never take the last slot: the owner can always reconnect.
	limit := maxPeers
	if claims.Role != token.RoleOwner {
		limit = maxPeers - 1
	}
	s.mu.Lock()
	if len(s.peers)+s.pending >= limit {
		s.mu.Unlock()
		w.Header().Set("Retry-After", "5")
		httpError(w, http.StatusServiceUnavailable, "too many viewers (%d)", maxPeers)
		return
	}
	s.pending++
	s.mu.Unlock()
	added := false
	defer func() {
		if !added {
			s.mu.Lock()
			s.pending--
			s.mu.Unlock()
		}
	}()

	id := newID()
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	p, answer, err := s.newPeer(ctx, id, claims.Role, string(body), fmtp)
	if err != nil {
		if errors.Is(err, errBadOffer) {
			httpError(w, http.StatusBadRequest, "invalid SDP offer: %v", err)
			return
		}
		s.log.Error("whep answer", "err", err)
		httpError(w, http.StatusInternalServerError, "could not answer: %v", err)
		return
	}
	s.addPeer(p, true)
	added = true
	w.Header().Set("Content-Type", "application/sdp")
	w.Header().Set("Location", "/whep/"+id)
	w.WriteHeader(http.StatusCreated)
	_, _ = io.WriteString(w, answer)
}

// whepDelete ends a WHEP session. Only its creator can: the resource URL
// (128 random bits) is told to the creator alone, and the token must carry
// the creator's role, so a viewer cannot end the owner's stream.
func (s *Server) whepDelete(w http.ResponseWriter, r *http.Request) {
	claims, ok := s.authorizeOnce(w, r)
	if !ok {
		return
	}
	id := r.PathValue("id")
	s.mu.Lock()
	p, found := s.peers[id]
	s.mu.Unlock()
	if !found || p.role != claims.Role {
		httpError(w, http.StatusNotFound, "no such WHEP session")
		return
	}
	if !s.removePeer(id) {
		httpError(w, http.StatusNotFound, "no such WHEP session")
		return
	}
	w.WriteHeader(http.StatusOK)
}

// authorizeOnce is authorize for a DELETE, which spends its token at once:
// a gateway-run streamer wants a single-use one, and any single-use token
// is good once. It answers 401 and returns false otherwise. (An offer
// spends its token only once the body is known to be an offer: whepPost.)
func (s *Server) authorizeOnce(w http.ResponseWriter, r *http.Request) (token.Claims, bool) {
	now := time.Now()
	c, ok := s.authorizeAt(w, r, now)
	if !ok {
		return c, false
	}
	if (s.cfg.SingleUseTokens && c.ID == "") || (c.ID != "" && !s.spend(c, now)) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="metal", error="invalid_token"`)
		httpError(w, http.StatusUnauthorized, "a single-use session token is required, once")
		return c, false
	}
	return c, true
}

// spend records a single-use token's ID until it expires; false if it was
// spent before.
func (s *Server) spend(c token.Claims, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.spent == nil {
		s.spent = map[string]int64{}
	}
	for id, exp := range s.spent {
		if exp <= now.Unix() {
			delete(s.spent, id)
		}
	}
	if _, used := s.spent[c.ID]; used || c.Expiry <= now.Unix() {
		return false
	}
	if len(s.spent) >= maxSpent {
		return false // more live single-use tokens than any gateway mints
	}
	s.spent[c.ID] = c.Expiry
	return true
}

// maxSpent bounds the remembered token IDs (each lives at most a token TTL).
const maxSpent = 4096

// whepDropViewers ends every spectator's WHEP session (DELETE /whep, owner
// token): the gateway calls it when the owner revokes a share link, and
// spectators whose links are still valid reconnect on their own.
func (s *Server) whepDropViewers(w http.ResponseWriter, r *http.Request) {
	claims, ok := s.authorizeOnce(w, r)
	if !ok {
		return
	}
	if claims.Role != token.RoleOwner {
		httpError(w, http.StatusForbidden, "only the owner drops spectators")
		return
	}
	viewers := s.peersWhere(func(p *peer) bool { return p.role != token.RoleOwner })
	for _, p := range viewers {
		s.removePeer(p.id)
	}
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, "{\"dropped\":%d}\n", len(viewers))
}

// checkOffer parses the offer so that a malformed one gets a precise error
// before any WebRTC state is created.
func checkOffer(b []byte) (*sdp.SessionDescription, error) {
	if len(strings.TrimSpace(string(b))) == 0 {
		return nil, errors.New("empty body")
	}
	var d sdp.SessionDescription
	if err := d.UnmarshalString(string(b)); err != nil {
		return nil, err
	}
	video := false
	for _, m := range d.MediaDescriptions {
		if m.MediaName.Media == "video" {
			video = true
		}
	}
	if !video {
		return nil, errors.New("no video m-line: add a recvonly video transceiver")
	}
	return &d, nil
}

// cors lets the gateway's player page (another origin) call WHEP. Tokens,
// not cookies, authorise, so any origin may ask.
func cors(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Access-Control-Allow-Origin", "*")
		h.Set("Access-Control-Allow-Methods", "POST, DELETE, PATCH, OPTIONS")
		h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type")
		h.Set("Access-Control-Expose-Headers", "Location")
		if r.Method == http.MethodOptions {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func newID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
