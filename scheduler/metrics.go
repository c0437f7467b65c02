package scheduler

import (
	"context"
	"errors"
	"net"
	"net/url"

	nomad "github.com/hashicorp/nomad/api"
	"github.com/prometheus/client_golang/prometheus"
)

// schedMetrics are the scheduler's Prometheus metrics. None carries a
// session or player label: their number would grow with the players.
type schedMetrics struct {
	placement prometheus.Histogram
	failovers *prometheus.CounterVec
	errors    *prometheus.CounterVec
	leader    prometheus.Gauge
	sessions  *prometheus.Desc
	queue     *prometheus.Desc
	s         *Scheduler
}

func newSchedMetrics(s *Scheduler) *schedMetrics {
	return &schedMetrics{
		s: s,
		placement: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "metal_scheduler_placement_seconds",
			Help:    "From a session's slot being reserved to Nomad reporting its allocation.",
			Buckets: []float64{.025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}),
		failovers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "metal_scheduler_failovers_total", Help: "Sessions ended by an edge failure, by cause.",
		}, []string{"cause"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "metal_scheduler_backend_errors_total", Help: "Failed calls to Nomad and Consul.",
		}, []string{"backend"}),
		leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "metal_scheduler_leader", Help: "1 while this gateway holds the leader lock.",
		}),
		sessions: prometheus.NewDesc("metal_scheduler_sessions", "Sessions by state, as this gateway sees the shared state.", []string{"state"}, nil),
		queue:    prometheus.NewDesc("metal_scheduler_queue_length", "Sessions waiting for a slot.", nil, nil),
	}
}

// Collectors are the scheduler's metrics, for the gateway's registry.
func (s *Scheduler) Collectors() []prometheus.Collector {
	m := s.metrics
	return []prometheus.Collector{m.placement, m.failovers, m.errors, m.leader, m}
}

// Describe implements prometheus.Collector for the per-state gauges.
func (m *schedMetrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- m.sessions
	ch <- m.queue
}

// Collect counts sessions by state from the view.
func (m *schedMetrics) Collect(ch chan<- prometheus.Metric) {
	counts := map[State]int{}
	for _, st := range []State{StateQueued, StatePlacing, StateStarting, StateReady, StateConnected, StateEnded, StateFailed} {
		counts[st] = 0
	}
	m.s.mu.Lock()
	for _, r := range m.s.records {
		if !r.creating {
			counts[m.s.statusLocked(r).State]++
		}
	}
	m.s.mu.Unlock()
	for st, n := range counts {
		ch <- prometheus.MustNewConstMetric(m.sessions, prometheus.GaugeValue, float64(n), string(st))
	}
	ch <- prometheus.MustNewConstMetric(m.queue, prometheus.GaugeValue, float64(counts[StateQueued]))
}

// consulError counts and logs a failed Consul call.
func (s *Scheduler) consulError(op string, err error) {
	s.metrics.errors.WithLabelValues("consul").Inc()
	s.log.Warn(op, "err", err)
}

// nomadErr counts and logs a failed Nomad call and returns it, marked as an
// outage (ErrUnavailable) when Nomad did not answer or answered 5xx; while
// it does not answer, admissions get 503.
func (s *Scheduler) nomadErr(err error) error {
	if err == nil {
		return nil
	}
	s.metrics.errors.WithLabelValues("nomad").Inc()
	s.log.Warn("nomad", "err", err)
	if !isOutage(err) {
		return err
	}
	var ue nomad.UnexpectedResponseError
	if !errors.As(err, &ue) {
		s.nomadDown.Store(true) // no answer at all
	}
	return unavailable(err)
}

// isOutage reports whether a Nomad error is the cluster being away (no
// answer, a 5xx, a timeout) rather than a refusal of the request.
func isOutage(err error) bool {
	if errors.Is(err, context.Canceled) {
		return false // the caller hung up; Nomad is fine
	}
	var ue nomad.UnexpectedResponseError
	if errors.As(err, &ue) {
		return ue.StatusCode() >= 500 || ue.StatusCode() == 429
	}
	var ne net.Error
	var ue2 *url.Error
	return errors.As(err, &ne) || errors.As(err, &ue2) || errors.Is(err, ErrUnavailable)
}
