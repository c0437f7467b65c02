package turn

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

type metrics struct {
	reg         *prometheus.Registry
	allocations prometheus.Gauge
	capped      prometheus.Counter
	denied      prometheus.Counter
	authFailed  prometheus.Counter
	relayed     *prometheus.CounterVec
	dropped     prometheus.Counter
	portDenied  prometheus.Counter
	quota       prometheus.Counter
	tcpRefused  prometheus.Counter
	outlived    prometheus.Counter
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		allocations: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "metal_turn_allocations", Help: "Live relay allocations."}),
		capped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "metal_turn_allocations_refused_total", Help: "Allocations refused at the allocation cap."}),
		denied: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "metal_turn_permissions_denied_total", Help: "Permissions refused by the peer filter."}),
		authFailed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "metal_turn_auth_failures_total", Help: "Requests with expired, forged or malformed credentials."}),
		relayed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "metal_turn_relayed_bytes_total", Help: "Relayed payload bytes by direction."}, []string{"direction"}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "metal_turn_dropped_bytes_total", Help: "Bytes dropped by the per-allocation bandwidth cap."}),
		portDenied: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "metal_turn_peer_port_denied_total", Help: "Datagrams not relayed because the peer port is one of the cluster's."}),
		quota: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "metal_turn_quota_refused_total", Help: "Allocate requests refused: the username or client address holds its quota."}),
		tcpRefused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "metal_turn_tcp_refused_total", Help: "TCP connections closed at once: a connection cap was reached."}),
		outlived: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "metal_turn_expired_credential_accepted_total", Help: "Requests accepted with an expired credential for the relay it opened while valid."}),
	}
	m.reg.MustRegister(m.allocations, m.capped, m.denied, m.authFailed, m.relayed, m.dropped, m.portDenied, m.quota, m.tcpRefused, m.outlived,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}
