package gateway

import (
	"context"
	"slices"
	"testing"
	"time"
)

// TestExpiredPlayersPruned: the leading gateway's prune loop removes
// players whose link expired, and keeps the others, and a player re-issued
// after the listing saw it expired (check-and-set delete).
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
	loopCtx, stop := context.WithCancel(ctx)
	defer stop()
	go s.pruneLoop(loopCtx, 200*time.Millisecond) // Run's loop, at a test's pace
	var names []string
	for {
		left, err := s.players.ListPlayers(ctx)
		if err != nil {
			t.Fatal(err)
		}
		names = names[:0]
		for _, p := range left {
			names = append(names, p.Name)
		}
		slices.Sort(names)
		if slices.Equal(names, []string{"forever", "valid"}) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("players after pruning: %v, want forever and valid", names)
		}
		time.Sleep(50 * time.Millisecond)
	}

	// The race the check-and-set closes: the listing saw "renewed" expired,
	// then an operator issued it a new link before the delete.
	stale := Player{Name: "renewed", Nonce: "d", Created: now.Add(-2 * time.Hour), Expires: now.Add(-time.Hour)}
	if err := s.players.PutPlayer(ctx, stale); err != nil {
		t.Fatal(err)
	}
	renewed := stale
	renewed.Nonce, renewed.Expires = "e", now.Add(time.Hour)
	if err := s.players.PutPlayer(ctx, renewed); err != nil {
		t.Fatal(err)
	}
	if removed, err := s.players.DeleteExpired(ctx, "renewed", now); err != nil || removed {
		t.Fatalf("a re-issued player was removed as expired: %v %v", removed, err)
	}
	if _, found, _ := s.players.GetPlayer(ctx, "renewed"); !found {
		t.Fatal("the re-issued player is gone")
	}
}
