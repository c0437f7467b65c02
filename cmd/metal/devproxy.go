package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	consul "github.com/hashicorp/consul/api"
)

// devProxy stands in front of several local gateways as an operator's load
// balancer would: it spreads requests over the metal-gateway instances
// Consul reports passing, and sends a request a gateway could not take
// (dead, refusing connections) to the next one. It exists only for
// `metal dev -gateways N`.
type devProxy struct {
	log      *slog.Logger
	mu       sync.Mutex
	backends []string // host:port
	next     atomic.Uint64
}

// follow keeps the backend list current from Consul's health, until ctx
// ends.
func (p *devProxy) follow(ctx context.Context, health *consul.Health) {
	var index uint64
	for ctx.Err() == nil {
		q := (&consul.QueryOptions{WaitIndex: index, WaitTime: 10 * time.Second}).WithContext(ctx)
		entries, meta, err := health.Service("metal-gateway", "", true, q)
		if err != nil {
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
			continue
		}
		index = meta.LastIndex
		var bs []string
		for _, e := range entries {
			addr := e.Service.Address
			if addr == "" {
				addr = e.Node.Address
			}
			bs = append(bs, net.JoinHostPort(addr, strconv.Itoa(e.Service.Port)))
		}
		p.mu.Lock()
		p.backends = bs
		p.mu.Unlock()
	}
}

func (p *devProxy) pick(skip map[string]bool) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := len(p.backends)
	start := int(p.next.Add(1))
	for i := range n {
		b := p.backends[(start+i)%n]
		if !skip[b] {
			return b
		}
	}
	return ""
}

// RoundTrip sends the request to one gateway, and to the next when a
// connection cannot be made.
func (p *devProxy) RoundTrip(req *http.Request) (*http.Response, error) {
	var body []byte
	if req.Body != nil {
		var err error
		if body, err = io.ReadAll(io.LimitReader(req.Body, 1<<20)); err != nil {
			return nil, err
		}
		req.Body.Close()
	}
	tried := map[string]bool{}
	var lastErr error
	for range 3 {
		b := p.pick(tried)
		if b == "" {
			break
		}
		tried[b] = true
		out := req.Clone(req.Context())
		out.URL.Scheme, out.URL.Host = "http", b
		out.Body = io.NopCloser(bytes.NewReader(body))
		resp, err := http.DefaultTransport.RoundTrip(out)
		var op *net.OpError
		if err != nil && errors.As(err, &op) && op.Op == "dial" {
			lastErr = err
			continue // that gateway is gone: the next one
		}
		return resp, err
	}
	if lastErr == nil {
		lastErr = fmt.Errorf("no gateway passing in Consul")
	}
	return nil, lastErr
}

// serve runs the proxy on ln until ctx ends.
func (p *devProxy) serve(ctx context.Context, ln net.Listener) error {
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(&url.URL{Scheme: "http", Host: "gateways"})
			r.Out.Host = r.In.Host
		},
		Transport:     p,
		FlushInterval: -1, // progress streams (SSE) pass at once
	}
	srv := &http.Server{Handler: rp, ReadHeaderTimeout: 10 * time.Second}
	go func() { <-ctx.Done(); _ = srv.Close() }()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
