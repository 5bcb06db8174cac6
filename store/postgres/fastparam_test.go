package postgres

import (
	"bytes"
	"context"
	"math"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/kvsidecar/kvsidecar/store"
	"github.com/kvsidecar/kvsidecar/store/postgres/pgtest"
)

// TestArrayParamsRoundTrip sends odd arrays as the fast path's bytea[] and
// int8[] parameters (byteaArray, int8Array) and checks that PostgreSQL
// receives exactly what pgx's own encoding of the same slices sends: the
// same elements, NULLs where an element is nil, the same cardinality.
func TestArrayParamsRoundTrip(t *testing.T) {
	conn := dbConn(t, pgtest.Database(t))
	ctx := context.Background()
	big := bytes.Repeat([]byte{0xff, 0x00, 'a'}, 1<<20/3+1) // over 1 MiB
	many := make([][]byte, 10000)
	manyInts := make([]int64, len(many))
	for i := range many {
		many[i] = []byte("k" + strconv.Itoa(i))
		manyInts[i] = int64(i) * 7919
	}
	cases := []struct {
		name  string
		elems [][]byte
		ints  []int64
	}{
		{"one", [][]byte{[]byte("k")}, []int64{1}},
		{"empty element", [][]byte{{}, []byte("x"), {}}, []int64{0, 0, 0}},
		{"NULs and invalid UTF-8", [][]byte{{0}, {0, 0, 'a', 0}, {0xc3, 0x28}, {0xff, 0xfe}}, []int64{-1, math.MinInt64, math.MaxInt64, 255}},
		{"1 MiB", [][]byte{big, []byte("after")}, []int64{1 << 40, 2}},
		{"nil element", [][]byte{[]byte("a"), nil}, []int64{3, 4}},
		{"many", many, manyInts},
		{"no elements", [][]byte{}, []int64{}},
	}
	const q = `SELECT $1::bytea[], $2::int8[], cardinality($1::bytea[]), cardinality($2::int8[]), md5(array_to_string($1::bytea[]::text[], ',', '<null>'))`
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var gotB, wantB [][]byte
			var gotI, wantI []int64
			var gotN, wantN, gotM, wantM *int64
			var gotSum, wantSum string
			if err := conn.QueryRow(ctx, q, &byteaArray{elems: c.elems}, &int8Array{elems: c.ints}).Scan(&gotB, &gotI, &gotN, &gotM, &gotSum); err != nil {
				t.Fatalf("query with the fast path's arrays: %v", err)
			}
			if err := conn.QueryRow(ctx, q, c.elems, c.ints).Scan(&wantB, &wantI, &wantN, &wantM, &wantSum); err != nil {
				t.Fatalf("query with pgx's arrays: %v", err)
			}
			if !equalElems(gotB, wantB) || !equalElems(gotB, c.elems) {
				t.Errorf("bytea[]: got %d elements, pgx's %d, sent %d, differing", len(gotB), len(wantB), len(c.elems))
			}
			for i := range c.elems {
				if (c.elems[i] == nil) != (gotB[i] == nil) {
					t.Errorf("element %d: sent nil %v, received NULL %v", i, c.elems[i] == nil, gotB[i] == nil)
				}
			}
			if len(gotI) != len(c.ints) {
				t.Fatalf("int8[]: got %d elements, sent %d", len(gotI), len(c.ints))
			}
			for i := range c.ints {
				if gotI[i] != c.ints[i] {
					t.Errorf("int8[%d]: got %d, sent %d", i, gotI[i], c.ints[i])
				}
			}
			if gotSum != wantSum || str(gotN) != str(wantN) || str(gotM) != str(wantM) {
				t.Errorf("server side: md5 %s cardinality %s/%s, pgx's md5 %s cardinality %s/%s",
					gotSum, str(gotN), str(gotM), wantSum, str(wantN), str(wantM))
			}
		})
	}
}

func equalElems(a, b [][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !bytes.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}

func str(p *int64) string {
	if p == nil {
		return "NULL"
	}
	return strconv.FormatInt(*p, 10)
}

// TestFastScratchAcrossBatches runs batches of sets of many projects,
// large keys and many keys one after the other, so that the scratch
// commitFast keeps from batch to batch is reused, grown and dropped, and
// checks that every key holds the value last set and that each project's
// usage is what its entries add up to.
func TestFastScratchAcrossBatches(t *testing.T) {
	dsn := testSchema(t, pgtest.Database(t))
	s := openStore(t, testConfig(dsn))
	ctx := context.Background()
	want := map[string]map[string]string{}
	var mu sync.Mutex
	for round := range 4 {
		var wg sync.WaitGroup
		for w := range 80 { // more projects than a scratch keeps
			wg.Go(func() {
				project := "p" + strconv.Itoa(w%(20+round*30))
				var items []store.Item
				n := 1 + (w*7+round)%40
				for i := range n {
					// Distinct across the round's callers; each round sets the same
					// keys again, some of them, with longer or shorter ones beside.
					key := strconv.Itoa(w) + "-" + strconv.Itoa(i) + strings.Repeat("é", (w*round*131+i)%500)
					items = append(items, store.Item{Key: key, Value: []byte(project + "/" + key + "/" + strconv.Itoa(round))})
				}
				if err := s.SetMany(ctx, project, items); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				defer mu.Unlock()
				if want[project] == nil {
					want[project] = map[string]string{}
				}
				for _, it := range items {
					want[project][it.Key] = string(it.Value)
				}
			})
		}
		wg.Wait()
	}
	conn := dbConn(t, dsn)
	for project, keys := range want {
		for key, value := range keys {
			got, ok, err := s.Get(ctx, project, key)
			if err != nil || !ok || string(got) != value {
				t.Fatalf("%s %.20q: got %.40q %v %v, want %.40q", project, key, got, ok, err, value)
			}
		}
		var usage, entries, sum, count int64
		if err := conn.QueryRow(ctx, `SELECT u.bytes, u.entries, (SELECT coalesce(sum(octet_length(key) + octet_length(value)), 0) FROM kv_entries WHERE project = $1), (SELECT count(*) FROM kv_entries WHERE project = $1) FROM kv_usage u WHERE u.project = $1`, project).Scan(&usage, &entries, &sum, &count); err != nil {
			t.Fatal(err)
		}
		if count != int64(len(keys)) || entries != count || usage != sum {
			t.Errorf("%s: usage %d bytes %d entries, entries hold %d bytes %d rows, want %d rows", project, usage, entries, sum, count, len(keys))
		}
	}
}
