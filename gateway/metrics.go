package gateway

import (
	"strconv"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

type metrics struct {
	requests *prometheus.CounterVec
	rejected prometheus.Counter
	streams  prometheus.Gauge
}

func newMetrics(reg *prometheus.Registry) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "metal_gateway_http_requests_total",
			Help: "HTTP requests by route template and status code.",
		}, []string{"route", "code"}),
	}
	m.rejected = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "metal_gateway_sessions_rejected_total", Help: "Session requests refused because capacity and queue were full."})
	m.streams = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "metal_gateway_progress_streams", Help: "Open progress (SSE) streams."})
	reg.MustRegister(m.requests, m.rejected, m.streams, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// middleware counts requests by route template (never by raw path, which
// would carry player links and session ids into labels).
func (m *metrics) middleware(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		err := next(c)
		code := c.Response().Status
		if he, ok := err.(*echo.HTTPError); ok {
			code = he.Code
		}
		route := c.Path()
		if route == "" {
			route = "unmatched"
		}
		m.requests.WithLabelValues(route, strconv.Itoa(code)).Inc()
		return err
	}
}
