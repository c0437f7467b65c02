package gateway

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"
)

// Player is an operator-issued player: a name and the one link that is
// currently valid for it.
type Player struct {
	Name    string    `json:"name"`
	Nonce   string    `json:"nonce"`
	Created time.Time `json:"created"`
	Expires time.Time `json:"expires,omitzero"`
}

// PlayerStore keeps players; deleting a player revokes its link.
type PlayerStore interface {
	PutPlayer(ctx context.Context, p Player) error
	GetPlayer(ctx context.Context, name string) (Player, bool, error)
	DeletePlayer(ctx context.Context, name string) (bool, error)
	ListPlayers(ctx context.Context) ([]Player, error)
	// DeleteExpired removes a player only if it is still expired at now
	// when the delete lands (check-and-set), false otherwise.
	DeleteExpired(ctx context.Context, name string, now time.Time) (bool, error)
}

var (
	// ErrBadLink is returned for a link that is malformed, forged, expired
	// or revoked. The gateway does not tell which.
	ErrBadLink = errors.New("invalid or revoked player link")
	// ErrBadPlayerName is returned for a name outside [a-z0-9._-]{1,64}.
	ErrBadPlayerName = errors.New("player name must be 1-64 characters of a-z, 0-9, '.', '_' and '-'")
)

var playerName = regexp.MustCompile(`^[a-z0-9._-]{1,64}$`)

// links signs and checks player links: base64url(name "." nonce "." expiry)
// "." base64url(HMAC-SHA256). The nonce ties a link to the player record,
// so re-issuing or deleting a player revokes the old link.
type links struct {
	key   []byte
	store PlayerStore
}

// Issue creates (or re-issues) a player and returns its link token.
func (l *links) Issue(ctx context.Context, name string, ttl time.Duration, now time.Time) (string, Player, error) {
	if !playerName.MatchString(name) {
		return "", Player{}, ErrBadPlayerName
	}
	nonce := make([]byte, 16)
	_, _ = rand.Read(nonce)
	p := Player{Name: name, Nonce: hex.EncodeToString(nonce), Created: now.UTC()}
	if ttl > 0 {
		p.Expires = now.Add(ttl).UTC()
	}
	if err := l.store.PutPlayer(ctx, p); err != nil {
		return "", Player{}, err
	}
	return l.sign(p), p, nil
}

func (l *links) sign(p Player) string {
	exp := int64(0)
	if !p.Expires.IsZero() {
		exp = p.Expires.Unix()
	}
	payload := base64.RawURLEncoding.EncodeToString([]byte(fmt.Sprintf("%s.%s.%d", p.Name, p.Nonce, exp)))
	return payload + "." + base64.RawURLEncoding.EncodeToString(l.mac(payload))
}

func (l *links) mac(payload string) []byte {
	h := hmac.New(sha256.New, l.key)
	h.Write([]byte("metal-player-link-v1."))
	h.Write([]byte(payload))
	return h.Sum(nil)
}

// Check verifies a link and returns its player.
func (l *links) Check(ctx context.Context, link string, now time.Time) (Player, error) {
	if len(link) > 512 {
		return Player{}, ErrBadLink
	}
	payload, sig, ok := strings.Cut(link, ".")
	if !ok {
		return Player{}, ErrBadLink
	}
	got, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil || !hmac.Equal(got, l.mac(payload)) {
		return Player{}, ErrBadLink
	}
	raw, err := base64.RawURLEncoding.DecodeString(payload)
	if err != nil {
		return Player{}, ErrBadLink
	}
	parts := strings.Split(string(raw), ".")
	if len(parts) != 3 {
		return Player{}, ErrBadLink
	}
	p, found, err := l.store.GetPlayer(ctx, parts[0])
	if err != nil {
		return Player{}, err
	}
	if !found || p.Nonce != parts[1] || (!p.Expires.IsZero() && !now.Before(p.Expires)) {
		return Player{}, ErrBadLink
	}
	return p, nil
}
