// Package token signs and checks Metal's session tokens: the gateway signs
// one per session and player role, the streamer checks it on every WHEP
// request. A token is base64url(JSON claims) "." base64url(HMAC-SHA256).
//
// It is not a general JWT library: one algorithm, one key, three claims.
package token

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Role is what a token lets its holder do.
type Role string

const (
	// RoleOwner may watch and send input.
	RoleOwner Role = "owner"
	// RoleViewer may only watch.
	RoleViewer Role = "viewer"
)

// MinKeyLen is the shortest signing key accepted.
const MinKeyLen = 32

// maxTokenLen bounds the work done on an untrusted token.
const maxTokenLen = 1024

var (
	// ErrMalformed is returned for a token that is not two base64url parts
	// of valid JSON.
	ErrMalformed = errors.New("malformed token")
	// ErrSignature is returned when the signature does not match.
	ErrSignature = errors.New("bad token signature")
	// ErrExpired is returned for a token past its expiry.
	ErrExpired = errors.New("token expired")
	// ErrShortKey is returned for a signing key under MinKeyLen bytes.
	ErrShortKey = errors.New("signing key too short")
)

// Claims are what a token asserts.
type Claims struct {
	Session string `json:"sid"`
	Role    Role   `json:"role"`
	Expiry  int64  `json:"exp"` // unix seconds
	// ID, when set, makes the token single-use: a streamer remembers it
	// until Expiry and refuses it a second time. The gateway mints every
	// token it uses with one.
	ID string `json:"jti,omitempty"`
}

// Signer signs and verifies tokens with one HMAC key.
type Signer struct {
	key []byte
}

// NewSigner returns a Signer for key, which must be at least MinKeyLen bytes.
func NewSigner(key []byte) (*Signer, error) {
	if len(key) < MinKeyLen {
		return nil, fmt.Errorf("%w: %d bytes, want at least %d", ErrShortKey, len(key), MinKeyLen)
	}
	return &Signer{key: append([]byte(nil), key...)}, nil
}

// Sign returns a token for session and role that expires after ttl, usable
// as often as its holder likes until then (the streamer's own laptop link).
func (s *Signer) Sign(session string, role Role, ttl time.Duration, now time.Time) (string, error) {
	return s.sign(Claims{Session: session, Role: role, Expiry: now.Add(ttl).Unix()})
}

// SignOnce returns a single-use token (with a random ID) for session and
// role that expires after ttl.
func (s *Signer) SignOnce(session string, role Role, ttl time.Duration, now time.Time) (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("sign token: %w", err)
	}
	return s.sign(Claims{Session: session, Role: role, Expiry: now.Add(ttl).Unix(), ID: hex.EncodeToString(b)})
}

func (s *Signer) sign(c Claims) (string, error) {
	session, role := c.Session, c.Role
	if session == "" {
		return "", errors.New("sign token: empty session id")
	}
	if role != RoleOwner && role != RoleViewer {
		return "", fmt.Errorf("sign token: unknown role %q", role)
	}
	body, err := json.Marshal(c)
	if err != nil {
		return "", fmt.Errorf("sign token: %w", err)
	}
	payload := base64.RawURLEncoding.EncodeToString(body)
	return payload + "." + base64.RawURLEncoding.EncodeToString(s.mac(payload)), nil
}

// Verify checks tok's signature and expiry and returns its claims.
func (s *Signer) Verify(tok string, now time.Time) (Claims, error) {
	var c Claims
	if len(tok) > maxTokenLen {
		return c, fmt.Errorf("%w: longer than %d bytes", ErrMalformed, maxTokenLen)
	}
	payload, sig, ok := strings.Cut(tok, ".")
	if !ok {
		return c, ErrMalformed
	}
	got, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil {
		return c, ErrMalformed
	}
	if !hmac.Equal(got, s.mac(payload)) {
		return c, ErrSignature
	}
	body, err := base64.RawURLEncoding.DecodeString(payload)
	if err != nil {
		return c, ErrMalformed
	}
	if err := json.Unmarshal(body, &c); err != nil || c.Session == "" {
		return Claims{}, ErrMalformed
	}
	if c.Role != RoleOwner && c.Role != RoleViewer {
		return Claims{}, fmt.Errorf("%w: unknown role", ErrMalformed)
	}
	if now.Unix() >= c.Expiry {
		return Claims{}, ErrExpired
	}
	return c, nil
}

func (s *Signer) mac(payload string) []byte {
	h := hmac.New(sha256.New, s.key)
	h.Write([]byte("metal-session-v1."))
	h.Write([]byte(payload))
	return h.Sum(nil)
}

// DeriveKey returns the signing key for one session, derived from the
// gateway's master key. Each streamer gets only its own session's key, so a
// compromised streamer cannot mint tokens for any other session.
func DeriveKey(master []byte, session string) []byte {
	h := hmac.New(sha256.New, master)
	h.Write([]byte("metal-session-key-v1."))
	h.Write([]byte(session))
	return []byte(hex.EncodeToString(h.Sum(nil)))
}
