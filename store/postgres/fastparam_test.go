package postgres

import (
	"bytes"
	"context"
	"math"
	"strconv"
	"testing"

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
