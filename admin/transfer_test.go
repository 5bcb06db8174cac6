package admin_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kvsidecar/kvsidecar/admin"
	"github.com/kvsidecar/kvsidecar/store"
	"github.com/kvsidecar/kvsidecar/store/pebble"
	"github.com/kvsidecar/kvsidecar/store/postgres"
	"github.com/kvsidecar/kvsidecar/store/postgres/pgtest"
)

func openPostgres(t testing.TB, cfg postgres.Config) *postgres.Store {
	t.Helper()
	cfg.DSN = pgtest.Database(t)
	cfg.SweepInterval = -1
	st, err := postgres.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// allEntries reads every live entry of project with its value.
func allEntries(t testing.TB, st store.Store, project string) []store.Entry {
	t.Helper()
	var all []store.Entry
	opts := store.ListOptions{Values: true}
	for {
		page, err := st.List(context.Background(), project, opts)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, page.Entries...)
		if !page.More {
			return all
		}
		opts.After = page.Entries[len(page.Entries)-1].Key
	}
}

// roundTripEntries are values an export must carry byte for byte: JSON of
// every kind (with its spacing), bytes that are not JSON, JSON-looking
// bytes a parser would change, and keys that need escaping.
var roundTripEntries = []struct {
	key, value string
	ttl        time.Duration
}{
	{"json:object", `{"name": "John",  "tags":["a","b"]}`, 0},
	{"json:string", `"text with \"quotes\" and \u00e9"`, time.Hour},
	{"json:number", `12345678901234567890.5e-3`, 0},
	{"json:null", `null`, 0},
	{"json:bool", `true`, 10 * 24 * time.Hour},
	{"json:array", "[1,\n 2]", 0},
	{"bytes:binary", "\x00\x01\xfe\xff", time.Minute},
	{"bytes:bad-utf8-in-string", "\"\xff\"", 0},
	{"bytes:spaces", " 42 ", 0},
	{"bytes:empty", "", 0},
	{"bytes:text", "plain text, not JSON", 0},
	{"bytes:two-values", "1 2", 0},
	{"key with \"quotes\", <html> & é 日本", `1`, 0},
	{"key\x00with-nul\n", `2`, 0},
}

func TestExportImportRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name     string
		src, dst func(t *testing.T) store.Store
	}{
		{"pebble", func(t *testing.T) store.Store { return openPebble(t, pebble.Config{}) }, func(t *testing.T) store.Store { return openPebble(t, pebble.Config{}) }},
		{"postgres", func(t *testing.T) store.Store { return openPostgres(t, postgres.Config{}) }, func(t *testing.T) store.Store { return openPostgres(t, postgres.Config{}) }},
		{"pebble to postgres", func(t *testing.T) store.Store { return openPebble(t, pebble.Config{}) }, func(t *testing.T) store.Store { return openPostgres(t, postgres.Config{}) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := newEnv(t, tc.src(t), admin.Config{})
			for _, e := range roundTripEntries {
				src.set("a", e.key, e.value, e.ttl)
			}
			src.set("b", "not-exported", "1", 0)
			r := src.do("GET", "/admin/api/v1/projects/a/export", aToken, nil)
			if r.status != 200 {
				t.Fatalf("export = %d %s", r.status, r.raw)
			}
			if got := r.header.Get("X-Kvsidecar-Entries"); got != fmt.Sprint(len(roundTripEntries)) {
				t.Fatalf("X-Kvsidecar-Entries = %q, want %d", got, len(roundTripEntries))
			}
			if cd := r.header.Get("Content-Disposition"); !strings.HasPrefix(cd, "attachment") {
				t.Fatalf("Content-Disposition = %q, want an attachment", cd)
			}
			var doc struct {
				Format     string           `json:"format"`
				Version    int              `json:"version"`
				Project    string           `json:"project"`
				ExportedAt time.Time        `json:"exported_at"`
				Entries    []map[string]any `json:"entries"`
			}
			if err := json.Unmarshal(r.raw, &doc); err != nil {
				t.Fatalf("export is not JSON: %v\n%s", err, r.raw)
			}
			if doc.Format != "kvsidecar-export" || doc.Version != 1 || doc.Project != "a" || time.Since(doc.ExportedAt) > time.Minute {
				t.Fatalf("export header = %+v", doc)
			}
			for _, e := range doc.Entries {
				_, isJSON := e["value"]
				_, isBase64 := e["value_base64"]
				if key := e["key"].(string); isJSON == strings.HasPrefix(key, "bytes:") || isJSON == isBase64 {
					t.Errorf("export entry %v: want value for JSON and value_base64 for the rest", e)
				}
			}

			dst := newEnv(t, tc.dst(t), admin.Config{})
			got := dst.call("POST", "/projects/a/import", aToken, string(r.raw), 200)
			jsonEq(t, "import", got.body, fmt.Sprintf(`{"imported":%d,"skipped_expired":0,"dry_run":false,"replaced":false}`, len(roundTripEntries)))

			want, have := allEntries(t, src.st, "a"), allEntries(t, dst.st, "a")
			if len(want) != len(have) {
				t.Fatalf("after the round trip %d entries, want %d", len(have), len(want))
			}
			for i := range want {
				w, h := want[i], have[i]
				if w.Key != h.Key || !bytes.Equal(w.Value, h.Value) || !w.Expires.Equal(h.Expires) || w.Size != h.Size {
					t.Errorf("entry %d after the round trip = {%q %q %v}, want {%q %q %v}", i, h.Key, h.Value, h.Expires, w.Key, w.Value, w.Expires)
				}
			}
			if _, found, _ := dst.st.Get(context.Background(), "a", "not-exported"); found {
				t.Fatal("another project's key came along")
			}
		})
	}
}

func TestImportPlainObject(t *testing.T) {
	e := newEnv(t, openPebble(t, pebble.Config{}), admin.Config{})
	doc := `{
	  "user:1": {"name": "John", "age": 30},
	  "count": 5,
	  "greeting": "hello",
	  "format": "my own key named format",
	  "list": [1, 2, 3],
	  "nothing": null
	}`
	jsonEq(t, "import", e.call("POST", "/projects/a/import", aToken, doc, 200).body,
		`{"imported":6,"skipped_expired":0,"dry_run":false,"replaced":false}`)
	for key, want := range map[string]string{
		"user:1": `{"name": "John", "age": 30}`, "count": "5", "greeting": `"hello"`,
		"format": `"my own key named format"`, "list": "[1, 2, 3]", "nothing": "null",
	} {
		if v, found := e.value("a", key); !found || v != want {
			t.Errorf("after importing a plain object, %s = %q (found %v), want %q", key, v, found, want)
		}
	}
	jsonEq(t, "empty object", e.call("POST", "/projects/a/import", aToken, `{}`, 200).body,
		`{"imported":0,"skipped_expired":0,"dry_run":false,"replaced":false}`)
}

// exportDoc builds an export document of entries given as JSON.
func exportDoc(entries ...string) string {
	return `{"format":"kvsidecar-export","version":1,"project":"x","exported_at":"2026-01-01T00:00:00Z","entries":[` +
		strings.Join(entries, ",") + `]}`
}

func TestImportOptions(t *testing.T) {
	e := newEnv(t, openPebble(t, pebble.Config{}), admin.Config{})
	expires := time.Now().Add(time.Hour).Truncate(time.Millisecond).UTC()
	future := expires.Format(time.RFC3339Nano)
	doc := exportDoc(
		`{"key":"k1","value":1,"expires_at":null}`,
		`{"key":"k2","value_base64":"AAE=","expires_at":"`+future+`"}`,
		`{"key":"old","value":1,"expires_at":"2020-01-01T00:00:00Z"}`,
	)
	e.set("a", "existing", "1", 0)

	jsonEq(t, "dry run", e.call("POST", "/projects/a/import?dry_run=true&replace=true", aToken, doc, 200).body,
		`{"imported":2,"skipped_expired":1,"dry_run":true,"replaced":false}`)
	if u, _ := e.st.Usage(context.Background(), "a"); u.Entries != 1 {
		t.Fatalf("a dry run changed the project: %d entries", u.Entries)
	}
	jsonEq(t, "import", e.call("POST", "/projects/a/import", aToken, doc, 200).body,
		`{"imported":2,"skipped_expired":1,"dry_run":false,"replaced":false}`)
	if _, found := e.value("a", "existing"); !found {
		t.Fatal("an import without replace removed an entry")
	}
	if _, found := e.value("a", "old"); found {
		t.Fatal("an expired entry was imported")
	}
	if entry, _, _ := e.st.Entry(context.Background(), "a", "k2"); !entry.Expires.Equal(expires) || string(entry.Value) != "\x00\x01" {
		t.Fatalf("k2 = %+v, want the bytes and the instant %s of the document", entry, future)
	}
	jsonEq(t, "replace", e.call("POST", "/projects/a/import?replace=true", aToken, doc, 200).body,
		`{"imported":2,"skipped_expired":1,"dry_run":false,"replaced":true}`)
	if _, found := e.value("a", "existing"); found {
		t.Fatal("an import with replace kept an entry the document does not have")
	}
	e.call("POST", "/projects/a/import?dry_run=maybe", aToken, doc, 400)
}

func TestImportBadDocuments(t *testing.T) {
	st := openPebble(t, pebble.Config{Limits: store.Limits{MaxValueBytes: 1000}})
	e := newEnv(t, st, admin.Config{ImportBatch: 2})
	good := `{"key":"ok","value":1,"expires_at":null}`
	good2 := `{"key":"ok2","value":2,"expires_at":null}`
	for _, tc := range []struct {
		name, doc, want string
		imported        float64
	}{
		{"not an object", `[1,2]`, "must be a JSON object", 0},
		{"not JSON", `{"a": nope}`, "invalid character", 0},
		{"empty body", ``, "unexpected EOF", 0},
		{"truncated", strings.TrimSuffix(exportDoc(good, good2), "]}"), "unexpected EOF", 2},
		{"data after", `{"a":1} {"b":2}`, "data after the end", 1},
		{"unknown member", strings.Replace(exportDoc(good), `"project"`, `"owner"`, 1), `unknown member "owner"`, 0},
		{"version 2", strings.Replace(exportDoc(good), `"version":1`, `"version":2`, 1), "version 2", 0},
		{"member after entries", strings.TrimSuffix(exportDoc(good), "}") + `,"more":1}`, `member "more" after entries`, 1},
		{"both values", exportDoc(good, `{"key":"k","value":1,"value_base64":"AA==","expires_at":null}`), "entry 2: key \"k\" has both", 1},
		{"no value", exportDoc(good, good2, `{"key":"k","expires_at":null}`), "entry 3: key \"k\" has no", 2},
		{"no key", exportDoc(`{"value":1}`), `entry 1: no "key"`, 0},
		{"unknown entry field", exportDoc(`{"key":"k","value":1,"ttl":5}`), "unknown field", 0},
		{"bad base64", exportDoc(`{"key":"k","value_base64":"%%"}`), "not base64", 0},
		{"bad time", exportDoc(`{"key":"k","value":1,"expires_at":"tomorrow"}`), "not an RFC 3339 time", 0},
		{"empty key", exportDoc(good, `{"key":"","value":1}`), "entry 2: key is empty", 1},
		{"value over the limit", exportDoc(`{"key":"k","value_base64":"` + strings.Repeat("AAAA", 400) + `"}`), "value too large", 0},
		{"entry over the bound", `{"k":"` + strings.Repeat("x", 200<<10) + `"}`, "entry too large", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := e.with(t)
			if _, err := st.Clear(context.Background(), "a"); err != nil {
				t.Fatal(err)
			}
			for _, dry := range []bool{true, false} {
				r := e.call("POST", fmt.Sprintf("/projects/a/import?dry_run=%v", dry), aToken, tc.doc, 400)
				if r.errCode() != "bad_request" || !strings.Contains(r.errMessage(), tc.want) {
					t.Fatalf("import (dry run %v) = %s, want bad_request containing %q", dry, r.raw, tc.want)
				}
				want := tc.imported
				if dry {
					want = 0
				}
				if r.body["imported"] != want {
					t.Fatalf("import (dry run %v) = %s, want imported %v", dry, r.raw, want)
				}
				if u, _ := st.Usage(context.Background(), "a"); u.Entries != int64(want) {
					t.Fatalf("after the refused import (dry run %v) %d entries, want %v", dry, u.Entries, want)
				}
			}
		})
	}
}

func TestImportStopsAtTheQuota(t *testing.T) {
	for _, tc := range []struct {
		name string
		open func(t *testing.T, quota int64) store.Store
	}{
		{"pebble", func(t *testing.T, quota int64) store.Store { return openPebble(t, pebble.Config{DefaultQuota: quota}) }},
		{"postgres", func(t *testing.T, quota int64) store.Store {
			return openPostgres(t, postgres.Config{DefaultQuota: quota})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// 100 entries of 100 bytes into a quota of 5050 bytes, 10 per
			// batch: five batches fit, the sixth is refused whole.
			st := tc.open(t, 5050)
			e := newEnv(t, st, admin.Config{ImportBatch: 10})
			var entries []string
			for i := range 100 {
				entries = append(entries, fmt.Sprintf(`{"key":"k%03d","value":"%s","expires_at":null}`, i, strings.Repeat("x", 94)))
			}
			// Entries past the refusal make the body much larger than what
			// the server reads before it answers: the answer must still
			// reach the client.
			for i := range 20000 {
				entries = append(entries, fmt.Sprintf(`{"key":"later%05d","value":"%s","expires_at":null}`, i, strings.Repeat("y", 500)))
			}
			r := e.call("POST", "/projects/a/import", aToken, exportDoc(entries...), 413)
			if r.errCode() != "quota_exceeded" || !strings.Contains(r.errMessage(), "quota exceeded") ||
				!strings.Contains(r.errMessage(), "stopped at entry 51 after importing 50") || r.body["imported"] != 50.0 {
				t.Fatalf("import over the quota = %s", r.raw)
			}
			u, err := st.Usage(context.Background(), "a")
			if err != nil || u.Entries != 50 || u.Bytes != 5000 {
				t.Fatalf("after the refused import: %+v, %v; want the 50 entries it reported", u, err)
			}
			if _, found := e.value("a", "k049"); !found {
				t.Fatal("k049 missing")
			}
			if _, found := e.value("a", "k050"); found {
				t.Fatal("k050, of the refused batch, was written")
			}
		})
	}
}

// peakHeap samples the heap while fn runs and returns the most it grew
// above what was in use before.
func peakHeap(fn func()) (grew uint64) {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapInuse
	var peak uint64
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapInuse)
			select {
			case <-done:
				return
			case <-tick.C:
			}
		}
	})
	fn()
	close(done)
	wg.Wait()
	if peak < base {
		return 0
	}
	return peak - base
}

// TestExportImportMemoryIsFlat exports a project of 100k entries of 1 KiB
// (about 130 MB of document) to a file and imports it into an empty store,
// through the real HTTP server, and checks that the heap of the process —
// server and client — grows by a small fraction of that on each leg. On
// PostgreSQL the store's memory is another process's, so the heap is the
// admin's own; on Pebble, its memtables and block cache are off the Go heap
// only in some builds (pebbleOffHeap).
func TestExportImportMemoryIsFlat(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 100k entries; skipped with -short")
	}
	const n = 100_000
	const flat = 48 << 20
	for _, tc := range []struct {
		name string
		open func(t *testing.T) store.Store
	}{
		{"postgres", func(t *testing.T) store.Store { return openPostgres(t, postgres.Config{}) }},
		{"pebble", func(t *testing.T) store.Store { return openPebble(t, pebble.Config{}) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name == "pebble" && !pebbleOffHeap {
				// Under -race the heap grew by 56 and 89 MiB, most of it
				// Pebble's cache: the heap no longer shows the admin's.
				t.Skip("Pebble's memory is on the Go heap in this build (race detector or no cgo); run with cgo, without -race")
			}
			src := newEnv(t, tc.open(t), admin.Config{})
			ctx := context.Background()
			var items []store.Item
			for i := range n {
				v := []byte(fmt.Sprintf(`{"i":%d,"pad":"%s"}`, i, strings.Repeat("p", 1000)))
				if i%2 == 1 {
					v = bytes.Repeat([]byte{0xff, byte(i)}, 512) // not JSON: base64
				}
				ttl := time.Duration(0)
				if i%3 == 0 {
					ttl = time.Hour
				}
				items = append(items, store.Item{Key: fmt.Sprintf("user:%06d", i), Value: v, TTL: ttl})
				if len(items) == store.MaxBatchItems {
					if err := src.st.SetMany(ctx, "a", items); err != nil {
						t.Fatal(err)
					}
					items = items[:0]
				}
			}
			path := filepath.Join(t.TempDir(), "export.json")
			grewExport := peakHeap(func() {
				req, _ := newRequest("GET", src.srv.URL+"/admin/api/v1/projects/a/export", aToken, nil)
				res, err := src.srv.Client().Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer res.Body.Close()
				f, err := os.Create(path)
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				if _, err := io.Copy(f, res.Body); err != nil {
					t.Fatal(err)
				}
			})
			info, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}

			dst := newEnv(t, tc.open(t), admin.Config{})
			var body []byte
			grewImport := peakHeap(func() {
				f, err := os.Open(path)
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				req, _ := newRequest("POST", dst.srv.URL+"/admin/api/v1/projects/a/import", aToken, f)
				res, err := dst.srv.Client().Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer res.Body.Close()
				body, _ = io.ReadAll(res.Body)
			})
			t.Logf("%d entries, export document %d MB; heap grew by %.1f MiB exporting, %.1f MiB importing",
				n, info.Size()/1e6, float64(grewExport)/(1<<20), float64(grewImport)/(1<<20))
			if want := fmt.Sprintf(`{"imported":%d,"skipped_expired":0,"dry_run":false,"replaced":false}`, n); strings.TrimSpace(string(body)) != want {
				t.Fatalf("import = %s, want %s", body, want)
			}
			if grewExport > flat || grewImport > flat {
				t.Fatalf("the heap grew by %d MiB (export) and %d MiB (import) for a %d MB document: not flat",
					grewExport>>20, grewImport>>20, info.Size()/1e6)
			}
			su, _ := src.st.Usage(ctx, "a")
			du, _ := dst.st.Usage(ctx, "a")
			if su != du {
				t.Fatalf("usage after the round trip %+v, want %+v", du, su)
			}
			for _, k := range []string{"user:000000", "user:000001", "user:099999"} {
				a, _, _ := src.st.Entry(ctx, "a", k)
				b, _, _ := dst.st.Entry(ctx, "a", k)
				if !bytes.Equal(a.Value, b.Value) || !a.Expires.Equal(b.Expires) {
					t.Fatalf("%s differs after the round trip", k)
				}
			}
		})
	}
}
