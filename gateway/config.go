package gateway

import (
	"errors"
	"fmt"
	"net"
	"net/url"
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
}

// DefaultConfig returns the defaults documented in the README.
func DefaultConfig() Config {
	return Config{Listen: "127.0.0.1:8080"}
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
	return errors.Join(errs...)
}
