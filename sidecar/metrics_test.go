package sidecar_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kvsidecar/kvsidecar/client"
	"github.com/kvsidecar/kvsidecar/protocol"
	"github.com/kvsidecar/kvsidecar/sidecar/sidecartest"
)

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// metricValue returns the value of the first sample line matching the
// metric name and labels given as a regexp.
func metricValue(t *testing.T, text, pattern string) float64 {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + pattern + ` ([0-9.e+-]+)$`).FindStringSubmatch(text)
	if m == nil {
		t.Fatalf("no sample matches %s in:\n%s", pattern, text)
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}

// TestMetricsAndHealth checks what an operator's dashboard and probes see:
// requests by op and result, quota refusals, group-commit batch sizes,
// open connections, and the health endpoints.
func TestMetricsAndHealth(t *testing.T) {
	d := sidecartest.Start(t, sidecartest.Options{Metrics: true, DefaultQuota: 4096})
	base := "http://" + d.MetricsAddr()
	if code, body := httpGet(t, base+"/healthz"); code != 200 || !strings.Contains(body, "ok") {
		t.Fatalf("/healthz: %d %q", code, body)
	}
	if code, body := httpGet(t, base+"/readyz"); code != 200 {
		t.Fatalf("/readyz: %d %q", code, body)
	}

	ctx := context.Background()
	c, err := client.Dial(ctx, d.Socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var wg sync.WaitGroup
	for i := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := c.Set(ctx, "k"+strconv.Itoa(i), i, 0); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if _, err := c.Get(ctx, "k1", new(int)); err != nil {
		t.Fatal(err)
	}
	big := strings.Repeat("x", 5000)
	if err := c.Set(ctx, "big", big, 0); !errors.Is(err, client.ErrQuotaExceeded) {
		t.Fatalf("set over quota: %v", err)
	}

	_, text := httpGet(t, base+"/metrics")
	if v := metricValue(t, text, `kvsidecar_requests_total\{op="set",result="ok"\}`); v != 64 {
		t.Errorf("set ok = %v, want 64", v)
	}
	if v := metricValue(t, text, `kvsidecar_requests_total\{op="set",result="quota_exceeded"\}`); v != 1 {
		t.Errorf("set quota_exceeded = %v, want 1", v)
	}
	if v := metricValue(t, text, `kvsidecar_quota_refusals_total`); v != 1 {
		t.Errorf("quota refusals = %v, want 1", v)
	}
	if v := metricValue(t, text, `kvsidecar_request_duration_seconds_count\{op="get"\}`); v != 1 {
		t.Errorf("get latency samples = %v, want 1", v)
	}
	if v := metricValue(t, text, `kvsidecar_connections_open`); v != 1 {
		t.Errorf("open connections = %v, want 1", v)
	}
	// 64 concurrent sets reached the store in fewer transactions than writes.
	batches := metricValue(t, text, `kvsidecar_store_batch_size_count`)
	writes := metricValue(t, text, `kvsidecar_store_batch_size_sum`)
	if writes < 64 || batches >= writes {
		t.Errorf("group commit: %v writes in %v transactions; want batching", writes, batches)
	}
	for _, name := range []string{"go_goroutines", "process_resident_memory_bytes"} {
		if !strings.Contains(text, name) {
			t.Errorf("/metrics lacks %s", name)
		}
	}
}

// TestCloseReasonsCounted checks that each way a connection ends is counted
// under its reason, which is what an operator's alerts are written against.
func TestCloseReasonsCounted(t *testing.T) {
	d := sidecartest.Start(t, sidecartest.Options{Metrics: true})
	base := "http://" + d.MetricsAddr()

	// peer_closed: a client that says hello and hangs up.
	c := dialRaw(t, d.Socket)
	c.hello()
	c.nc.Close()
	// bad_frame: a frame that is not a msgpack map.
	b := dialRaw(t, d.Socket)
	b.hello()
	b.write(protocol.AppendFrame(nil, []byte{0xc1}))
	if resp, ok := b.read(); !ok || resp.Err == nil || resp.Err.Code != protocol.CodeBadFrame {
		t.Fatalf("garbage frame: %+v (open %v)", resp, ok)
	}
	b.expectClosed()

	want := map[string]float64{"peer_closed": 1, "bad_frame": 1, "slow_reader": 0, "revoked": 0}
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, text := httpGet(t, base+"/metrics")
		ok := true
		for reason, n := range want {
			if metricValue(t, text, `kvsidecar_connections_closed_total\{reason="`+reason+`"\}`) != n {
				ok = false
			}
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("closed connections by reason, want %v, in:\n%s", want, grepLines(text, "kvsidecar_connections_closed_total"))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// grepLines returns the lines of text that contain s.
func grepLines(text, s string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
