package gateway

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/metal-stream/metal/scheduler"
)

// sessionEvents streams a session's progress as server-sent events: one
// "status" event per change, a comment every 15 s to keep proxies open, and
// the stream ends after a terminal state.
func (s *Server) sessionEvents(c echo.Context) error {
	st0, err := s.ownedSession(c)
	if err != nil {
		return err
	}
	id := st0.ID
	w := c.Response()
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	s.metrics.streams.Inc()
	defer s.metrics.streams.Dec()
	defer s.placer.Watch(id)()

	ctx := c.Request().Context()
	keepalive := time.NewTicker(15 * time.Second)
	defer keepalive.Stop()
	var last []byte
	for {
		changed := s.placer.Changed()
		st, err := s.placer.Get(id)
		if err != nil {
			return nil
		}
		s.placer.Touch(id)
		// Compare the status itself (with its endpoint), not the view.
		b, _ := json.Marshal(struct {
			S scheduler.Status
			E *scheduler.Endpoint
		}{st, st.Endpoint})
		if string(b) != string(last) {
			full, _ := json.Marshal(s.view(ctx, st, "/v1/sessions/"+id+"/whep", id))
			if _, err := fmt.Fprintf(w, "event: status\ndata: %s\n\n", full); err != nil {
				return nil
			}
			w.Flush()
			last = b
		}
		if st.State.Terminal() {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-s.closing:
			return nil // shutting down: the browser reconnects to another gateway
		case <-changed:
		case <-keepalive.C:
			if _, err := fmt.Fprint(w, ": keepalive\n\n"); err != nil {
				return nil
			}
			w.Flush()
		}
	}
}
