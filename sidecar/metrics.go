package sidecar

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics are the daemon's Prometheus metrics, on their own registry.
type Metrics struct {
	Registry *prometheus.Registry

	requests      *prometheus.CounterVec   // op, result
	duration      *prometheus.HistogramVec // op
	connsOpen     prometheus.Gauge
	conns         *prometheus.CounterVec // result: accepted, refused
	closed        *prometheus.CounterVec // reason: a closeReason
	batchSize     prometheus.Histogram
	quotaRefusals prometheus.Counter
	badFrames     prometheus.Counter
}

// NewMetrics creates and registers the daemon's metrics, with the Go runtime
// and process collectors.
func NewMetrics() *Metrics {
	m := &Metrics{Registry: prometheus.NewRegistry()}
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kvsidecar_requests_total",
		Help: "Requests answered, by op and result (ok or the error code).",
	}, []string{"op", "result"})
	m.duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "kvsidecar_request_duration_seconds",
		Help: "Time from reading a request to queueing its response, by op.",
		// 50µs to ~3s: a read served from PostgreSQL on the same node takes
		// a few hundred µs; a group commit a few ms.
		Buckets: prometheus.ExponentialBuckets(50e-6, 2, 16),
	}, []string{"op"})
	m.connsOpen = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "kvsidecar_connections_open",
		Help: "Client connections open now.",
	})
	m.conns = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kvsidecar_connections_total",
		Help: "Client connections accepted, by result (accepted, or refused when the caller maps to no project).",
	}, []string{"result"})
	m.closed = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kvsidecar_connections_closed_total",
		Help: "Client connections closed, by reason: peer_closed, read_error, write_error, bad_frame, stopping, slow_reader, hello_timeout, revoked, forbidden.",
	}, []string{"reason"})
	for _, r := range closeReasons {
		m.closed.WithLabelValues(string(r))
	}
	m.batchSize = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "kvsidecar_store_batch_size",
		Help:    "Write requests committed per store transaction (group commit).",
		Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024},
	})
	m.quotaRefusals = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "kvsidecar_quota_refusals_total",
		Help: "Writes refused because they would exceed the project's quota.",
	})
	m.badFrames = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "kvsidecar_bad_frames_total",
		Help: "Connections closed because of a malformed or oversized frame.",
	})
	m.Registry.MustRegister(m.requests, m.duration, m.connsOpen, m.conns, m.closed, m.batchSize, m.quotaRefusals, m.badFrames,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

// ObserveBatch records the size of one store transaction; backends call it
// through their ObserveBatch hook.
func (m *Metrics) ObserveBatch(n int) { m.batchSize.Observe(float64(n)) }
