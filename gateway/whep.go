package gateway

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/metal-stream/metal/internal/token"
	"github.com/metal-stream/metal/scheduler"
)

// WHEP through the gateway. A page served over HTTPS may not call a
// streamer's http:// WHEP URL (mixed content), and a browser should never
// learn streamer addresses or hold a streamer token. So the page POSTs its
// offer to the gateway (same origin, its cookie or share link authorising
// it); the gateway mints a single-use token of the caller's role (30 s,
// with an ID the streamer spends) and forwards the offer to the streamer
// over the cluster network; the answer comes back with a Location under the
// gateway. Media still flows directly between browser and streamer (or its
// edge's TURN) over DTLS-SRTP: only signalling passes here.

const (
	maxOfferBytes = 64 << 10
)

var whepResource = regexp.MustCompile(`^[0-9a-f]{32}$`)

var whepClient = &http.Client{Timeout: 15 * time.Second}

// streamerRequest builds a request to the session's streamer (path under
// its HTTP endpoint), authorised with a single-use token of role that the
// gateway mints for this one request.
func (s *Server) streamerRequest(ctx context.Context, st scheduler.Status, role token.Role, method, path string, body io.Reader) (*http.Request, error) {
	signer, err := token.NewSigner(s.placer.SessionKey(st.ID))
	if err != nil {
		return nil, err
	}
	tok, err := signer.SignOnce(st.ID, role, s.cfg.TokenTTL, time.Now())
	if err != nil {
		return nil, err
	}
	url := "http://" + net.JoinHostPort(st.Endpoint.Address, strconv.Itoa(st.Endpoint.Port)) + path
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	return req, nil
}

// forwardWHEP sends the caller's WHEP request to the session's streamer as
// role. resource is "" for the offer (POST), the streamer's resource id for
// DELETE and for PATCH (an ICE restart); base is the gateway path the
// answer's Location goes under.
func (s *Server) forwardWHEP(c echo.Context, st scheduler.Status, role token.Role, resource, base string) error {
	if st.Endpoint == nil || (st.State != scheduler.StateReady && st.State != scheduler.StateConnected) {
		return echo.NewHTTPError(http.StatusConflict, fmt.Sprintf("the stream is not ready (%s)", st.State))
	}
	path := "/whep"
	var body io.Reader
	method := http.MethodDelete
	if resource == "" || c.Request().Method == http.MethodPatch {
		// An offer (POST), or an ICE restart's SDP fragment (PATCH).
		method = http.MethodPost
		if resource != "" {
			method = http.MethodPatch
		}
		b, err := io.ReadAll(io.LimitReader(c.Request().Body, maxOfferBytes+1))
		if err != nil {
			return echo.NewHTTPError(http.StatusBadRequest, "read the SDP body")
		}
		if len(b) > maxOfferBytes {
			return echo.NewHTTPError(http.StatusRequestEntityTooLarge, "SDP body larger than 64 KiB")
		}
		body = bytes.NewReader(b)
	}
	if resource != "" {
		if !whepResource.MatchString(resource) {
			return echo.NewHTTPError(http.StatusNotFound, "no such WHEP session")
		}
		path += "/" + resource
	}
	ctx, cancel := context.WithTimeout(c.Request().Context(), 15*time.Second)
	defer cancel()
	req, err := s.streamerRequest(ctx, st, role, method, path, body)
	if err != nil {
		return err
	}
	if ct := c.Request().Header.Get("Content-Type"); ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	resp, err := whepClient.Do(req)
	if err != nil {
		s.log.Warn("forward WHEP", "session", st.ID, "err", err)
		return echo.NewHTTPError(http.StatusBadGateway, "the streamer did not answer")
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(io.LimitReader(resp.Body, maxOfferBytes))
	h := c.Response().Header()
	if ct := resp.Header.Get("Content-Type"); ct != "" {
		h.Set("Content-Type", ct)
	}
	if loc := resp.Header.Get("Location"); loc != "" {
		id, ok := strings.CutPrefix(loc, "/whep/")
		if !ok || !whepResource.MatchString(id) {
			return echo.NewHTTPError(http.StatusBadGateway, "the streamer answered an odd Location")
		}
		h.Set("Location", base+"/"+id)
	}
	if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
		// The gateway's own token was refused: never pass a streamer's
		// WWW-Authenticate on to a browser that holds no token.
		return echo.NewHTTPError(http.StatusBadGateway, "the streamer refused the gateway's token")
	}
	if retry := resp.Header.Get("Retry-After"); retry != "" {
		h.Set("Retry-After", retry)
	}
	c.Response().WriteHeader(resp.StatusCode)
	_, err = c.Response().Write(out)
	return err
}

// dropViewers asks the session's streamer to end every spectator's WHEP
// session (its DELETE /whep, with a single-use owner token).
func (s *Server) dropViewers(ctx context.Context, st scheduler.Status) error {
	if st.Endpoint == nil {
		return nil // no streamer yet: nobody watches
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := s.streamerRequest(ctx, st, token.RoleOwner, http.MethodDelete, "/whep", nil)
	if err != nil {
		return err
	}
	resp, err := whepClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("streamer answered %d", resp.StatusCode)
	}
	return nil
}

// ownerWHEPPost forwards the owner's offer (POST /v1/sessions/:id/whep).
func (s *Server) ownerWHEPPost(c echo.Context) error {
	st, err := s.ownedSession(c)
	if err != nil {
		return err
	}
	return s.forwardWHEP(c, st, token.RoleOwner, "", "/v1/sessions/"+st.ID+"/whep")
}

// ownerWHEPResource ends (DELETE) or restarts ICE on (PATCH) one of the
// owner's WHEP sessions.
func (s *Server) ownerWHEPResource(c echo.Context) error {
	st, err := s.ownedSession(c)
	if err != nil {
		return err
	}
	return s.forwardWHEP(c, st, token.RoleOwner, c.Param("res"), "/v1/sessions/"+st.ID+"/whep")
}
