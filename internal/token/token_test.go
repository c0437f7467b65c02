package token

import (
	"errors"
	"strings"
	"testing"
	"time"
)

var key = []byte("0123456789abcdef0123456789abcdef")

func TestSignVerify(t *testing.T) {
	s, err := NewSigner(key)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := NewSigner([]byte("ffffffffffffffffffffffffffffffff"))
	now := time.Unix(1_700_000_000, 0)
	good, err := s.Sign("sess-1", RoleOwner, time.Minute, now)
	if err != nil {
		t.Fatal(err)
	}
	forged, _ := other.Sign("sess-1", RoleOwner, time.Minute, now)
	payload, sig, _ := strings.Cut(good, ".")
	tampered := strings.Replace(payload, "o", "p", 1) + "." + sig

	tests := []struct {
		name    string
		tok     string
		at      time.Time
		wantErr error
	}{
		{"valid", good, now, nil},
		{"expired", good, now.Add(time.Minute), ErrExpired},
		{"other key", forged, now, ErrSignature},
		{"tampered payload", tampered, now, ErrSignature},
		{"no dot", "abc", now, ErrMalformed},
		{"bad base64 sig", payload + ".!!", now, ErrMalformed},
		{"empty", "", now, ErrMalformed},
		{"huge", strings.Repeat("a", 5000), now, ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := s.Verify(tt.tok, tt.at)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Verify err = %v, want %v", err, tt.wantErr)
			}
			if tt.wantErr == nil && (c.Session != "sess-1" || c.Role != RoleOwner) {
				t.Fatalf("claims = %+v", c)
			}
		})
	}
}

func TestShortKeyRejected(t *testing.T) {
	if _, err := NewSigner([]byte("short")); !errors.Is(err, ErrShortKey) {
		t.Fatalf("err = %v", err)
	}
}

func TestSignRejectsBadRole(t *testing.T) {
	s, _ := NewSigner(key)
	if _, err := s.Sign("x", "admin", time.Minute, time.Now()); err == nil {
		t.Fatal("signed an unknown role")
	}
}

func FuzzVerify(f *testing.F) {
	s, _ := NewSigner(key)
	tok, _ := s.Sign("s", RoleViewer, time.Hour, time.Unix(0, 0))
	f.Add(tok)
	f.Add("a.b")
	f.Fuzz(func(t *testing.T, tok string) {
		_, _ = s.Verify(tok, time.Unix(0, 0))
	})
}
