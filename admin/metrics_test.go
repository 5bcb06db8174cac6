package admin_test

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kvsidecar/kvsidecar/admin"
	"github.com/kvsidecar/kvsidecar/store"
	"github.com/kvsidecar/kvsidecar/store/pebble"
)

// gauges gathers reg and returns metric name → project → value.
func gauges(t *testing.T, reg *prometheus.Registry) map[string]map[string]float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string]float64{}
	for _, f := range families {
		out[f.GetName()] = map[string]float64{}
		for _, m := range f.GetMetric() {
			project := ""
			for _, l := range m.GetLabel() {
				if l.GetName() == "project" {
					project = l.GetValue()
				}
			}
			out[f.GetName()][project] = m.GetGauge().GetValue()
		}
	}
	return out
}

func TestUsageMetrics(t *testing.T) {
	ctx := context.Background()
	st := openPebble(t, pebble.Config{DefaultQuota: 1000})
	reg := prometheus.NewRegistry()
	m, err := admin.NewUsageMetrics(st, reg, time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	if g := gauges(t, reg); len(g["kvsidecar_project_usage_bytes"]) != 0 || g["kvsidecar_project_usage_refreshed_timestamp_seconds"][""] != 0 {
		t.Fatalf("before the first refresh: %v, want no project and a zero timestamp", g)
	}
	if err := st.Set(ctx, "shop", "k", []byte("12345"), 0); err != nil {
		t.Fatal(err)
	}
	if err := st.SetMany(ctx, "blog", []store.Item{{Key: "a", Value: []byte("1")}, {Key: "b", Value: []byte("2")}}); err != nil {
		t.Fatal(err)
	}
	if err := st.SetQuota(ctx, "blog", 50); err != nil {
		t.Fatal(err)
	}
	// Run refreshes at once, then every interval (an hour here).
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); m.Run(runCtx) }()
	deadline := time.Now().Add(10 * time.Second)
	for gauges(t, reg)["kvsidecar_project_usage_refreshed_timestamp_seconds"][""] == 0 {
		if time.Now().After(deadline) {
			t.Fatal("Run did not refresh")
		}
		time.Sleep(10 * time.Millisecond)
	}
	stop()
	<-done
	g := gauges(t, reg)
	for name, want := range map[string]map[string]float64{
		"kvsidecar_project_usage_bytes": {"shop": 6, "blog": 4},
		"kvsidecar_project_quota_bytes": {"shop": 1000, "blog": 50},
		"kvsidecar_project_entries":     {"shop": 1, "blog": 2},
	} {
		if len(g[name]) != len(want) {
			t.Errorf("%s = %v, want %v", name, g[name], want)
		}
		for p, v := range want {
			if g[name][p] != v {
				t.Errorf("%s{project=%q} = %v, want %v", name, p, g[name][p], v)
			}
		}
	}
	// A refresh replaces the snapshot: a cleared project shows 0.
	if _, err := st.Clear(ctx, "shop"); err != nil {
		t.Fatal(err)
	}
	if err := m.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if v := gauges(t, reg)["kvsidecar_project_usage_bytes"]["shop"]; v != 0 {
		t.Fatalf("usage of a cleared project after a refresh = %v", v)
	}
}
