package admin

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/kvsidecar/kvsidecar/store"
)

// DefaultUsageInterval is how often UsageMetrics re-reads every project's
// usage. Listing the projects is one paged scan of the usage table (or of
// the embedded store's project states), cheap at this rate; usage graphs and quota
// alerts do not need fresher numbers than a scrape interval or two.
const DefaultUsageInterval = 30 * time.Second

// usagePage is the projects one refresh step reads.
const usagePage = store.MaxListLimit

// UsageMetrics exports per-project gauges — kvsidecar_project_usage_bytes,
// kvsidecar_project_quota_bytes and kvsidecar_project_entries, labelled
// project — from a snapshot that Run refreshes every interval. Scrapes read
// the snapshot, never the store, and always see one whole refresh.
//
// Cardinality: one series per project per gauge, over every project the
// store knows (written once, or given a quota override), so 3 × projects
// series in all, plus kvsidecar_project_usage_refreshed_timestamp_seconds.
type UsageMetrics struct {
	st       store.Store
	interval time.Duration
	log      *zap.Logger

	usageDesc, quotaDesc, entriesDesc, refreshedDesc *prometheus.Desc

	mu        sync.Mutex
	snapshot  []store.ProjectUsage
	refreshed time.Time
}

// NewUsageMetrics registers the gauges with reg. interval 0 means
// DefaultUsageInterval.
func NewUsageMetrics(st store.Store, reg prometheus.Registerer, interval time.Duration, log *zap.Logger) (*UsageMetrics, error) {
	if interval <= 0 {
		interval = DefaultUsageInterval
	}
	if log == nil {
		log = zap.NewNop()
	}
	m := &UsageMetrics{
		st:       st,
		interval: interval,
		log:      log,
		usageDesc: prometheus.NewDesc("kvsidecar_project_usage_bytes",
			"Bytes a project's live entries use (keys and values), as of the last refresh.", []string{"project"}, nil),
		quotaDesc: prometheus.NewDesc("kvsidecar_project_quota_bytes",
			"The quota in force for a project: its override or the default.", []string{"project"}, nil),
		entriesDesc: prometheus.NewDesc("kvsidecar_project_entries",
			"Live entries of a project, as of the last refresh.", []string{"project"}, nil),
		refreshedDesc: prometheus.NewDesc("kvsidecar_project_usage_refreshed_timestamp_seconds",
			"When the per-project gauges were last refreshed (unix seconds); 0 before the first refresh.", nil, nil),
	}
	if err := reg.Register(m); err != nil {
		return nil, fmt.Errorf("register usage metrics: %w", err)
	}
	return m, nil
}

// Describe implements prometheus.Collector.
func (m *UsageMetrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- m.usageDesc
	ch <- m.quotaDesc
	ch <- m.entriesDesc
	ch <- m.refreshedDesc
}

// Collect implements prometheus.Collector.
func (m *UsageMetrics) Collect(ch chan<- prometheus.Metric) {
	m.mu.Lock()
	snapshot, refreshed := m.snapshot, m.refreshed
	m.mu.Unlock()
	for _, u := range snapshot {
		ch <- prometheus.MustNewConstMetric(m.usageDesc, prometheus.GaugeValue, float64(u.Bytes), u.Name)
		ch <- prometheus.MustNewConstMetric(m.quotaDesc, prometheus.GaugeValue, float64(u.Quota), u.Name)
		ch <- prometheus.MustNewConstMetric(m.entriesDesc, prometheus.GaugeValue, float64(u.Entries), u.Name)
	}
	var ts float64
	if !refreshed.IsZero() {
		ts = float64(refreshed.UnixNano()) / 1e9
	}
	ch <- prometheus.MustNewConstMetric(m.refreshedDesc, prometheus.GaugeValue, ts)
}

// Refresh reads every project's usage, page by page, and replaces the
// snapshot. On error the previous snapshot stays.
func (m *UsageMetrics) Refresh(ctx context.Context) error {
	var all []store.ProjectUsage
	after := ""
	for {
		page, err := m.st.Projects(ctx, after, usagePage)
		if err != nil {
			return fmt.Errorf("refresh usage metrics: %w", err)
		}
		all = append(all, page.Projects...)
		if !page.More || len(page.Projects) == 0 {
			break
		}
		after = page.Projects[len(page.Projects)-1].Name
	}
	m.mu.Lock()
	m.snapshot, m.refreshed = all, time.Now()
	m.mu.Unlock()
	return nil
}

// Run refreshes at once and then every interval, until ctx ends. A failed
// refresh is logged and the previous numbers stay (the refreshed timestamp
// shows their age).
func (m *UsageMetrics) Run(ctx context.Context) {
	t := time.NewTicker(m.interval)
	defer t.Stop()
	for {
		if err := m.Refresh(ctx); err != nil && ctx.Err() == nil {
			m.log.Warn("usage metrics not refreshed", zap.Error(err))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
