package sidecar

import (
	"sort"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// topProjects is how many projects the per-project metrics name: the ones
// with the most connections and the ones holding the most in-flight bytes
// (up to twice this many series in all), so that a daemon serving
// thousands of projects exports a bounded number of series, and the
// projects an operator must look at are among them.
const topProjects = 10

// Metrics are the daemon's Prometheus metrics, on their own registry.
type Metrics struct {
	Registry *prometheus.Registry

	requests      *prometheus.CounterVec   // op, result
	duration      *prometheus.HistogramVec // op
	connsOpen     prometheus.Gauge
	conns         *prometheus.CounterVec // result: accepted, refused
	closed        *prometheus.CounterVec // reason: a closeReason
	refused       *prometheus.CounterVec // reason: a refusal
	refusedBy     map[refusal]prometheus.Counter
	closedForbid  prometheus.Counter
	refusedConns  prometheus.Counter
	inflight      prometheus.Gauge // bytes held in the in-flight budget
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
		Help: "Client connections accepted, by result: accepted, or refused (see kvsidecar_connections_refused_total for why).",
	}, []string{"result"})
	m.closed = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kvsidecar_connections_closed_total",
		Help: "Client connections closed, by reason: peer_closed, read_error, write_error, bad_frame, stopping, slow_reader, frame_timeout, hello_timeout, revoked, forbidden.",
	}, []string{"reason"})
	for _, r := range closeReasons {
		m.closed.WithLabelValues(string(r))
	}
	m.refused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kvsidecar_connections_refused_total",
		Help: "Client connections refused, by reason: max_conns, project_conns, unmapped, forbidden, hello_timeout.",
	}, []string{"reason"})
	m.refusedBy = make(map[refusal]prometheus.Counter, len(refusals))
	for _, r := range refusals {
		m.refusedBy[r] = m.refused.WithLabelValues(string(r))
	}
	m.inflight = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "kvsidecar_inflight_bytes",
		Help: "Bytes held now by requests read and responses not yet written (reserved, then actual), against --max-inflight-bytes.",
	})
	m.closedForbid = m.closed.WithLabelValues(string(closeForbidden))
	m.refusedConns = m.conns.WithLabelValues("refused")
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
	m.Registry.MustRegister(m.requests, m.duration, m.connsOpen, m.conns, m.closed, m.refused, m.inflight, m.batchSize, m.quotaRefusals, m.badFrames,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

// ObserveBatch records the size of one store transaction; backends call it
// through their ObserveBatch hook.
func (m *Metrics) ObserveBatch(n int) { m.batchSize.Observe(float64(n)) }

// refuse counts a refused connection. The counters are looked up once, in
// NewMetrics: a flood of refusals makes this the hot path.
func (m *Metrics) refuse(why refusal) {
	m.refusedConns.Inc()
	m.refusedBy[why].Inc()
	if why == refusedUnmapped || why == refusedForbidden {
		m.closedForbid.Inc()
	}
}

// watchServer registers the per-project metrics of s.
func (m *Metrics) watchServer(s *Server) {
	m.Registry.MustRegister(projectCollector{s: s})
}

var (
	projectConnsDesc = prometheus.NewDesc("kvsidecar_project_connections",
		"Open connections of a project, for the projects with the most connections or in-flight bytes (at most 10 of each).",
		[]string{"project"}, nil)
	projectBytesDesc = prometheus.NewDesc("kvsidecar_project_inflight_bytes",
		"In-flight bytes held by a project's connections, for the same projects as kvsidecar_project_connections.",
		[]string{"project"}, nil)
	projectsDesc = prometheus.NewDesc("kvsidecar_projects_connected",
		"Projects with at least one open connection.", nil, nil)
)

// projectCollector exports connections and in-flight bytes of the top
// projects (see topProjects) at each scrape.
type projectCollector struct{ s *Server }

func (pc projectCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- projectConnsDesc
	ch <- projectBytesDesc
	ch <- projectsDesc
}

func (pc projectCollector) Collect(ch chan<- prometheus.Metric) {
	type row struct {
		name  string
		conns int
		bytes int64
	}
	s := pc.s
	s.mu.Lock()
	rows := make([]row, 0, len(s.projects))
	for _, ps := range s.projects {
		rows = append(rows, row{ps.name, ps.conns, ps.held.Load()})
	}
	s.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(projectsDesc, prometheus.GaugeValue, float64(len(rows)))
	chosen := make(map[string]row)
	sort.Slice(rows, func(i, j int) bool {
		return rows[i].conns > rows[j].conns || rows[i].conns == rows[j].conns && rows[i].name < rows[j].name
	})
	for _, r := range rows[:min(len(rows), topProjects)] {
		chosen[r.name] = r
	}
	sort.Slice(rows, func(i, j int) bool {
		return rows[i].bytes > rows[j].bytes || rows[i].bytes == rows[j].bytes && rows[i].name < rows[j].name
	})
	for _, r := range rows[:min(len(rows), topProjects)] {
		if r.bytes > 0 {
			chosen[r.name] = r
		}
	}
	for _, r := range chosen {
		ch <- prometheus.MustNewConstMetric(projectConnsDesc, prometheus.GaugeValue, float64(r.conns), r.name)
		ch <- prometheus.MustNewConstMetric(projectBytesDesc, prometheus.GaugeValue, float64(r.bytes), r.name)
	}
}
