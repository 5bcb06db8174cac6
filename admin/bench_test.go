package admin_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/kvsidecar/kvsidecar/admin"
	"github.com/kvsidecar/kvsidecar/store"
	"github.com/kvsidecar/kvsidecar/store/pebble"
)

// benchEntries is the size of the project the benchmarks move: 10k entries
// of a 12-byte key and a 104-byte JSON value.
const benchEntries = 10_000

func benchServer(b *testing.B) (*httptest.Server, store.Store) {
	b.Helper()
	st := openPebble(b, pebble.Config{})
	tokens, err := admin.LoadTokens(writeTokens(b, admin.TokenLine(adminToken, admin.RoleAdmin)))
	if err != nil {
		b.Fatal(err)
	}
	h, err := admin.New(admin.Config{Tokens: tokens}, st, nil)
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(h)
	b.Cleanup(srv.Close)
	return srv, st
}

func fill(b *testing.B, st store.Store, project string) {
	b.Helper()
	var items []store.Item
	for i := range benchEntries {
		items = append(items, store.Item{Key: fmt.Sprintf("user:%07d", i), Value: []byte(fmt.Sprintf(`{"n":"%07d","pad":"%080d"}`, i, i))})
		if len(items) == store.MaxBatchItems {
			if err := st.SetMany(context.Background(), project, items); err != nil {
				b.Fatal(err)
			}
			items = items[:0]
		}
	}
}

func export(b *testing.B, srv *httptest.Server, project string, w io.Writer) {
	req, _ := newRequest("GET", srv.URL+"/admin/api/v1/projects/"+project+"/export", adminToken, nil)
	res, err := srv.Client().Do(req)
	if err != nil || res.StatusCode != http.StatusOK {
		b.Fatalf("export: %v %v", res, err)
	}
	defer res.Body.Close()
	if _, err := io.Copy(w, res.Body); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkExport streams a project of benchEntries entries over HTTP.
func BenchmarkExport(b *testing.B) {
	srv, st := benchServer(b)
	fill(b, st, "a")
	b.ResetTimer()
	for b.Loop() {
		export(b, srv, "a", io.Discard)
	}
	b.ReportMetric(float64(benchEntries*b.N)/b.Elapsed().Seconds(), "entries/s")
}

// BenchmarkImport imports the same project again and again (replace=true,
// so each round clears and writes benchEntries entries with fsyncs).
func BenchmarkImport(b *testing.B) {
	srv, st := benchServer(b)
	fill(b, st, "a")
	var doc bytes.Buffer
	export(b, srv, "a", &doc)
	b.SetBytes(int64(doc.Len()))
	b.ResetTimer()
	for b.Loop() {
		req, _ := newRequest("POST", srv.URL+"/admin/api/v1/projects/b/import?replace=true", adminToken, bytes.NewReader(doc.Bytes()))
		res, err := srv.Client().Do(req)
		if err != nil || res.StatusCode != http.StatusOK {
			b.Fatalf("import: %v %v", res, err)
		}
		res.Body.Close()
	}
	b.ReportMetric(float64(benchEntries*b.N)/b.Elapsed().Seconds(), "entries/s")
}
