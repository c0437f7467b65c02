package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"regexp"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/metal-stream/metal/scheduler"
)

// Placer is what the gateway needs from the scheduler.
type Placer interface {
	Enqueue(ctx context.Context, player string, prefs scheduler.Prefs) (scheduler.Status, bool, error)
	Edges() []scheduler.Edge
	Get(id string) (scheduler.Status, error)
	Stop(ctx context.Context, id, reason string) error
	Touch(id string)
	Watch(id string) (release func())
	Changed() <-chan struct{}
	SessionKey(id string) []byte
	SessionsOf(player string) []string
	Ready() bool
}

// ICEServer is one entry of RTCPeerConnection's iceServers.
type ICEServer struct {
	URLs       []string `json:"urls"`
	Username   string   `json:"username,omitempty"`
	Credential string   `json:"credential,omitempty"`
}

// TURNProvider hands out TURN servers with short-lived credentials for a
// session (nil: none).
type TURNProvider interface {
	ICEServers(ctx context.Context, session, datacenter string) ([]ICEServer, error)
}

// Stream is what a browser needs to play a ready session: the gateway's
// own WHEP endpoint for it (the gateway forwards the offer to the streamer
// over the cluster network, so the browser never learns the streamer's
// address or holds a streamer token) and TURN servers.
type Stream struct {
	WHEP       string      `json:"whep"`
	ICEServers []ICEServer `json:"ice_servers"`
}

// SessionView is the JSON a player sees.
type SessionView struct {
	ID       string          `json:"id"`
	State    scheduler.State `json:"state"`
	Position int             `json:"position,omitempty"`
	Reason   string          `json:"reason,omitempty"`
	Encoder  string          `json:"encoder,omitempty"`
	Node     string          `json:"node,omitempty"`
	// Edge is where the session is placed, RTT what the player measured,
	// Choice why that edge.
	Edge   string             `json:"edge,omitempty"`
	RTT    map[string]float64 `json:"rtt,omitempty"`
	Choice string             `json:"choice,omitempty"`
	// Replacement is the new session after a failover; follow it.
	Replacement string  `json:"replacement,omitempty"`
	Stream      *Stream `json:"stream,omitempty"`
}

type createRequest struct {
	Link  string `json:"link,omitempty"`
	Guest string `json:"guest,omitempty"`
	// RTT is what the page measured to each edge's probe, in ms.
	RTT map[string]float64 `json:"rtt,omitempty"`
	// Avoid lists edges not to use (one that just failed the player).
	Avoid []string `json:"avoid,omitempty"`
}

var edgeName = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

func (r createRequest) prefs() (scheduler.Prefs, error) {
	if len(r.RTT) > 32 || len(r.Avoid) > 32 {
		return scheduler.Prefs{}, errors.New("at most 32 edges in rtt and avoid")
	}
	for name, ms := range r.RTT {
		if !edgeName.MatchString(name) {
			return scheduler.Prefs{}, fmt.Errorf("rtt: bad edge name %q", name)
		}
		if !(ms > 0 && ms < 60000) {
			return scheduler.Prefs{}, fmt.Errorf("rtt for %s: %v ms is not between 0 and 60000", name, ms)
		}
	}
	for _, name := range r.Avoid {
		if !edgeName.MatchString(name) {
			return scheduler.Prefs{}, fmt.Errorf("avoid: bad edge name %q", name)
		}
	}
	return scheduler.Prefs{RTT: r.RTT, Avoid: r.Avoid}, nil
}

var (
	sessionIDPattern = regexp.MustCompile(`^[0-9a-f]{32}$`)
	guestPattern     = regexp.MustCompile(`^[A-Za-z0-9_-]{8,64}$`)
)

// apiError is every JSON error body.
type apiError struct {
	Error string `json:"error"`
}

func jsonError(c echo.Context, code int, format string, a ...any) error {
	return c.JSON(code, apiError{Error: fmt.Sprintf(format, a...)})
}

// createSession admits a player: it resumes the player's live session
// (200), places or queues a new one (201 or 202), or refuses (401, 429).
func (s *Server) createSession(c echo.Context) error {
	if c.Request().ContentLength != 0 || c.Request().Header.Get("Content-Type") != "" {
		mt, _, err := mime.ParseMediaType(c.Request().Header.Get("Content-Type"))
		if err != nil || mt != "application/json" {
			return jsonError(c, http.StatusUnsupportedMediaType, "Content-Type must be application/json")
		}
	}
	var req createRequest
	dec := json.NewDecoder(http.MaxBytesReader(c.Response(), c.Request().Body, 4<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return jsonError(c, http.StatusRequestEntityTooLarge, "request body larger than 4 KiB")
		}
		return jsonError(c, http.StatusBadRequest, "invalid JSON body: %v", err)
	}
	if err := dec.Decode(&struct{}{}); err != io.EOF {
		return jsonError(c, http.StatusBadRequest, "invalid JSON body: trailing data after the object")
	}
	prefs, err := req.prefs()
	if err != nil {
		return jsonError(c, http.StatusBadRequest, "%v", err)
	}
	var player string
	switch {
	case req.Link != "":
		p, err := s.links.Check(c.Request().Context(), req.Link, time.Now())
		if errors.Is(err, ErrBadLink) {
			return jsonError(c, http.StatusUnauthorized, "%v", err)
		}
		if err != nil {
			c.Response().Header().Set("Retry-After", "2")
			return jsonError(c, http.StatusServiceUnavailable, "player store unavailable: %v", err)
		}
		player = p.Name
	case s.cfg.OpenMode && req.Guest != "":
		if !guestPattern.MatchString(req.Guest) {
			return jsonError(c, http.StatusBadRequest, "guest id must be 8-64 characters of A-Z, a-z, 0-9, '_' and '-'")
		}
		player = guestPlayer(req.Guest)
	case s.cfg.OpenMode:
		return jsonError(c, http.StatusBadRequest, `send {"link": "..."} or, in open mode, {"guest": "<id>"}`)
	default:
		return jsonError(c, http.StatusUnauthorized, `a player link is required: send {"link": "..."}`)
	}
	if !s.placer.Ready() {
		c.Response().Header().Set("Retry-After", "2")
		return jsonError(c, http.StatusServiceUnavailable, "gateway is starting")
	}
	st, created, err := s.placer.Enqueue(c.Request().Context(), player, prefs)
	switch {
	case errors.Is(err, scheduler.ErrQueueFull):
		s.metrics.rejected.Inc()
		c.Response().Header().Set("Retry-After", "30")
		return jsonError(c, http.StatusTooManyRequests, "all GPUs are busy and the queue is full; try again later")
	case err != nil:
		// Nomad or Consul away (an outage, a leader election): nothing was
		// created, and the same request succeeds once they answer.
		c.Response().Header().Set("Retry-After", "2")
		return jsonError(c, http.StatusServiceUnavailable, "could not queue the session, try again shortly: %v", err)
	}
	// Whoever proves the player (their link, or the guest id their browser
	// keeps) gets the owner cookie: a new tab or a reload resumes.
	s.setOwner(c, player)
	view := s.view(c.Request().Context(), st, "/v1/sessions/"+st.ID+"/whep", st.ID)
	c.Response().Header().Set("Location", "/v1/sessions/"+st.ID)
	switch {
	case !created:
		return c.JSON(http.StatusOK, view)
	case st.State == scheduler.StateQueued:
		return c.JSON(http.StatusAccepted, view)
	default:
		return c.JSON(http.StatusCreated, view)
	}
}

// errNoSession is the one answer for a session that does not exist and for
// one that is not the caller's: a stranger learns nothing, not even that
// the id is live.
var errNoSession = echo.NewHTTPError(http.StatusNotFound, "no such session")

// storeUnavailable is the answer while the sessions' store (Consul) does
// not answer: the same request succeeds once it is back. It says nothing
// about whether the session exists.
func storeUnavailable(c echo.Context) error {
	c.Response().Header().Set("Retry-After", "2")
	return echo.NewHTTPError(http.StatusServiceUnavailable, "session store unavailable, try again shortly")
}

// ownedSession is the session named in the path, if the request's owner
// cookie is its player's; otherwise errNoSession (or a 400 for a malformed
// id). Nothing about the session changes on the way.
func (s *Server) ownedSession(c echo.Context) (scheduler.Status, error) {
	id := c.Param("id")
	if !sessionIDPattern.MatchString(id) {
		return scheduler.Status{}, echo.NewHTTPError(http.StatusBadRequest, "malformed session id")
	}
	st, err := s.placer.Get(id)
	if errors.Is(err, scheduler.ErrUnavailable) {
		return scheduler.Status{}, storeUnavailable(c)
	}
	if err != nil {
		return scheduler.Status{}, errNoSession
	}
	if !s.owns(c, st.Player) {
		return scheduler.Status{}, errNoSession
	}
	return st, nil
}

func (s *Server) getSession(c echo.Context) error {
	st, err := s.ownedSession(c)
	if err != nil {
		return err
	}
	s.placer.Touch(st.ID)
	return c.JSON(http.StatusOK, s.view(c.Request().Context(), st, "/v1/sessions/"+st.ID+"/whep", st.ID))
}

func (s *Server) deleteSession(c echo.Context) error {
	st, err := s.ownedSession(c)
	if err != nil {
		return err
	}
	id := st.ID
	err = s.placer.Stop(c.Request().Context(), id, scheduler.ReasonStopped)
	if errors.Is(err, scheduler.ErrNotFound) {
		return jsonError(c, http.StatusNotFound, "no such session")
	}
	if err != nil {
		c.Response().Header().Set("Retry-After", "2")
		return jsonError(c, http.StatusServiceUnavailable, "could not stop: %v", err)
	}
	return c.NoContent(http.StatusNoContent)
}

// view turns a status into what the browser sees; a ready session carries
// whep (the gateway's WHEP endpoint for this caller) and TURN servers,
// whose credentials name turnUser (the relays' per-username quota counts
// each name apart).
func (s *Server) view(ctx context.Context, st scheduler.Status, whep, turnUser string) SessionView {
	v := SessionView{ID: st.ID, State: st.State, Position: st.Position, Reason: st.Reason, Encoder: st.Encoder, Node: st.Node,
		RTT: st.RTT, Choice: st.Choice, Replacement: st.Replacement}
	if st.State != scheduler.StateQueued {
		v.Edge = st.Datacenter
	}
	if st.Endpoint == nil || (st.State != scheduler.StateReady && st.State != scheduler.StateConnected) {
		return v
	}
	stream := &Stream{WHEP: whep, ICEServers: []ICEServer{}}
	if s.turn != nil {
		if ice, err := s.turn.ICEServers(ctx, turnUser, st.Datacenter); err == nil {
			stream.ICEServers = ice
		} else {
			s.log.Warn("turn servers", "session", st.ID, "err", err)
		}
	}
	v.Stream = stream
	return v
}

// listEdges lists the edges a player may be placed in, with the probe URL
// the page times to measure its RTT to each.
func (s *Server) listEdges(c echo.Context) error {
	edges := s.placer.Edges()
	if edges == nil {
		edges = []scheduler.Edge{}
	}
	return c.JSON(http.StatusOK, edges)
}
