package gateway

import (
	"context"
	"slices"
	"testing"
	"time"
)

// TestExpiredPlayersPruned: the leading gateway removes players whose link
// expired, and keeps the others.
func TestExpiredPlayersPruned(t *testing.T) {
	s := newTestServer(t, nil, nil)
	ctx := context.Background()
	now := time.Now()
	for _, p := range []Player{
		{Name: "gone", Nonce: "a", Created: now.Add(-2 * time.Hour), Expires: now.Add(-time.Hour)},
		{Name: "valid", Nonce: "b", Created: now, Expires: now.Add(time.Hour)},
		{Name: "forever", Nonce: "c", Created: now},
	} {
		if err := s.players.PutPlayer(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for !s.leading() {
		if time.Now().After(deadline) {
			t.Fatal("the only gateway does not lead")
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.pruneExpired(ctx, now)
	left, err := s.players.ListPlayers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range left {
		names = append(names, p.Name)
	}
	slices.Sort(names)
	if !slices.Equal(names, []string{"forever", "valid"}) {
		t.Fatalf("players after pruning: %v, want forever and valid", names)
	}
}
