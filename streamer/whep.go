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
// Trickle ICE (PATCH) is not offered: the answer carries every candidate.

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
	auth := r.Header.Get("Authorization")
	tok, ok := strings.CutPrefix(auth, "Bearer ")
	if !ok || tok == "" {
		w.Header().Set("WWW-Authenticate", `Bearer realm="metal"`)
		httpError(w, http.StatusUnauthorized, "missing session token: send Authorization: Bearer <token>")
		return token.Claims{}, false
	}
	c, err := s.signer.Verify(tok, time.Now())
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
	claims, ok := s.authorize(w, r)
	if !ok {
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
	if err := checkOffer(body); err != nil {
		httpError(w, http.StatusBadRequest, "invalid SDP offer: %v", err)
		return
	}
	s.mu.Lock()
	n := len(s.peers)
	s.mu.Unlock()
	if n >= maxPeers {
		w.Header().Set("Retry-After", "5")
		httpError(w, http.StatusServiceUnavailable, "too many viewers (%d)", maxPeers)
		return
	}

	id := newID()
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	p, answer, err := s.newPeer(ctx, id, claims.Role, string(body))
	if err != nil {
		if errors.Is(err, errBadOffer) {
			httpError(w, http.StatusBadRequest, "invalid SDP offer: %v", err)
			return
		}
		s.log.Error("whep answer", "err", err)
		httpError(w, http.StatusInternalServerError, "could not answer: %v", err)
		return
	}
	s.addPeer(p)
	w.Header().Set("Content-Type", "application/sdp")
	w.Header().Set("Location", "/whep/"+id)
	w.WriteHeader(http.StatusCreated)
	_, _ = io.WriteString(w, answer)
}

func (s *Server) whepDelete(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.authorize(w, r); !ok {
		return
	}
	if !s.removePeer(r.PathValue("id")) {
		httpError(w, http.StatusNotFound, "no such WHEP session")
		return
	}
	w.WriteHeader(http.StatusOK)
}

func (s *Server) whepPatch(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Allow", "DELETE")
	httpError(w, http.StatusMethodNotAllowed, "trickle ICE is not supported: the answer carries every candidate")
}

// checkOffer parses the offer so that a malformed one gets a precise error
// before any WebRTC state is created.
func checkOffer(b []byte) error {
	if len(strings.TrimSpace(string(b))) == 0 {
		return errors.New("empty body")
	}
	var d sdp.SessionDescription
	if err := d.UnmarshalString(string(b)); err != nil {
		return err
	}
	video := false
	for _, m := range d.MediaDescriptions {
		if m.MediaName.Media == "video" {
			video = true
		}
	}
	if !video {
		return errors.New("no video m-line: add a recvonly video transceiver")
	}
	return nil
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
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
