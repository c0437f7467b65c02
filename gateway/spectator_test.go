package gateway

import (
	"context"
	"strings"
	"testing"

	"github.com/metal-stream/metal/scheduler"
)

type recordingTURN struct{ users []string }

func (r *recordingTURN) ICEServers(_ context.Context, user, _ string) ([]ICEServer, error) {
	r.users = append(r.users, user)
	return []ICEServer{{URLs: []string{"turn:192.0.2.1:3478"}, Username: "x:" + user}}, nil
}

// TestSpectatorsHaveTURNCredentialsOfTheirOwn: a ready session's view
// carries TURN credentials for the name it is given; a spectator's name is
// never the session's (the relays' per-session quota is the owner's alone)
// and differs from one spectator to the next.
func TestSpectatorsHaveTURNCredentialsOfTheirOwn(t *testing.T) {
	rec := &recordingTURN{}
	s := &Server{turn: rec, log: quietLogger()}
	st := scheduler.Status{ID: "sess1", State: scheduler.StateReady, Endpoint: &scheduler.Endpoint{Address: "10.0.0.1", Port: 1}}
	owner := s.view(context.Background(), st, "/v1/sessions/sess1/whep", st.ID)
	a := s.view(context.Background(), st, "/v1/shares/x/whep", spectatorTURNUser(st.ID))
	b := s.view(context.Background(), st, "/v1/shares/x/whep", spectatorTURNUser(st.ID))
	if owner.Stream == nil || a.Stream == nil || b.Stream == nil {
		t.Fatal("a ready session's view has no stream")
	}
	if rec.users[0] != "sess1" {
		t.Fatalf("the owner's credentials name %q, want the session", rec.users[0])
	}
	if rec.users[1] == "sess1" || rec.users[1] == rec.users[2] || !strings.HasPrefix(rec.users[1], "sess1-w") {
		t.Fatalf("spectators' credentials name %q and %q: want names of their own", rec.users[1], rec.users[2])
	}
}
