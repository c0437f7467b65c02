package gateway

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"time"
)

// Config is the gateway's configuration. Zero values are replaced by
// DefaultConfig's in Validate.
type Config struct {
	// Listen is the HTTP listen address.
	Listen string
	// PublicURL is the gateway's address as players reach it; derived from
	// the listener when empty.
	PublicURL string
	// OpenMode lets anyone start a session without a player link. Only for
	// local development (`make dev`).
	OpenMode bool
	// AdminToken authorises the admin API (/v1/admin/...); empty disables it.
	AdminToken string
	// LinkKey signs player links (at least 32 bytes).
	LinkKey []byte
	// TokenTTL is the lifetime of the single-use streamer token the gateway
	// mints for each WHEP request it forwards (browsers never hold one).
	TokenTTL time.Duration
	// TLSCert and TLSKey, when set, make the gateway serve HTTPS itself
	// (otherwise put it behind a TLS-terminating proxy with TrustProxy).
	TLSCert, TLSKey string
	// TrustProxy takes the client address from X-Forwarded-For (only behind a
	// proxy that sets it); otherwise the TCP peer address is used.
	TrustProxy bool
	// RatePerSecond and Burst limit session and page requests per client IP.
	RatePerSecond float64
	Burst         int
}

// DefaultConfig returns the defaults documented in the README.
func DefaultConfig() Config {
	return Config{Listen: "127.0.0.1:8080", TokenTTL: 30 * time.Second, RatePerSecond: 2, Burst: 10}
}

// Validate checks the configuration once at start.
func (c Config) Validate() error {
	var errs []error
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		errs = append(errs, fmt.Errorf("-listen %q: %w", c.Listen, err))
	}
	if c.PublicURL != "" {
		u, err := url.Parse(c.PublicURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("-public-url %q: want an absolute http(s) URL", c.PublicURL))
		}
	}
	if len(c.LinkKey) < 32 {
		errs = append(errs, fmt.Errorf("-link-key: %d bytes, want at least 32", len(c.LinkKey)))
	}
	if c.AdminToken != "" && len(c.AdminToken) < 16 {
		errs = append(errs, errors.New("-admin-token: want at least 16 characters"))
	}
	if c.TokenTTL <= 0 {
		errs = append(errs, fmt.Errorf("-token-ttl %s: want a positive duration", c.TokenTTL))
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		errs = append(errs, errors.New("-tls-cert and -tls-key: give both or neither"))
	}
	if c.RatePerSecond <= 0 || c.Burst <= 0 {
		errs = append(errs, fmt.Errorf("-rate %v and -burst %d: want positive values", c.RatePerSecond, c.Burst))
	}
	return errors.Join(errs...)
}
