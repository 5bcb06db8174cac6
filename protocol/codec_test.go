package protocol

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"io"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

func TestRequestRoundTrip(t *testing.T) {
	cases := []Request{
		{ID: 0, Op: OpHello, Version: 1, Client: "go/1"},
		{ID: 1, Op: OpPing},
		{ID: 2, Op: OpGet, Key: "user:1", Timeout: 2500},
		{ID: 3, Op: OpSet, Key: "k", Value: []byte(`{"a":1}`), TTL: 3600000},
		{ID: 4, Op: OpSet, Key: "empty", Value: []byte{}},
		{ID: 5, Op: OpDelete, Key: "k"},
		{ID: 6, Op: OpHas, Key: "k"},
		{ID: 7, Op: OpClear},
		{ID: 8, Op: OpGetMany, Keys: []string{"a", "b", "ü"}},
		{ID: 9, Op: OpSetMany, Items: []Item{{Key: "a", Value: []byte("1")}, {Key: "b", Value: []byte("2"), TTL: 5}}},
		{ID: 10, Op: OpDeleteMany, Keys: []string{"a"}},
		{ID: 11, Op: OpHasMany, Keys: []string{}},
		{ID: 12, Op: OpList, Prefix: "user:", Cursor: "user:5", Limit: 50, Values: true},
		{ID: 13, Op: OpIncr, Key: "hits", Delta: -3, TTL: 60000},
		{ID: 14, Op: OpIncr, Key: "hits", Delta: 0},
		{ID: 1 << 52, Op: OpUsage},
	}
	enc, dec := NewEncoder(), NewDecoder()
	for _, want := range cases {
		t.Run(want.Op.String(), func(t *testing.T) {
			frame, err := enc.Request(&want)
			if err != nil {
				t.Fatal(err)
			}
			payload, err := ReadFrame(bytes.NewReader(frame), 1<<20, nil)
			if err != nil {
				t.Fatal(err)
			}
			var got Request
			if err := dec.DecodeRequest(payload, &got); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("round trip:\n got %+v\nwant %+v", got, want)
			}
		})
	}
}

func TestResponseRoundTrip(t *testing.T) {
	cases := []Response{
		{ID: 1, Op: OpPing},
		{ID: 2, Op: OpGet, Found: true, Value: []byte(`"v"`)},
		{ID: 3, Op: OpGet, Found: true, Value: []byte{}},
		{ID: 4, Op: OpGet},
		{ID: 5, Op: OpHas, Found: true},
		{ID: 6, Op: OpDelete, Bool: true},
		{ID: 7, Op: OpClear, Int: 12},
		{ID: 8, Op: OpIncr, Int: -9},
		{ID: 9, Op: OpGetMany, Values: [][]byte{[]byte("1"), nil, {}}},
		{ID: 10, Op: OpHasMany, Bools: []bool{true, false}},
		{ID: 11, Op: OpDeleteMany, Bools: []bool{false}},
		{ID: 12, Op: OpList, List: ListResult{Keys: []string{"a", "b"}, Cursor: "b"}},
		{ID: 13, Op: OpList, List: ListResult{Keys: []string{"a"}, Values: [][]byte{[]byte("x")}}},
		{ID: 14, Op: OpUsage, Usage: UsageResult{Bytes: 10, Entries: 2, Quota: 1 << 30}},
		{ID: 0, Op: OpHello, Hello: HelloResult{Version: 1, Server: "kvsidecar/x", Project: "p", Limits: Limits{MaxKey: 1, MaxValue: 2, MaxFrame: 3, MaxInflight: 4, MaxBatch: 5, MaxResponse: 6}}},
		{ID: 15, Op: OpSet, Err: &Error{Code: CodeQuotaExceeded, Message: "quota exceeded: project uses 10 of 10 bytes"}},
	}
	enc, dec := NewEncoder(), NewDecoder()
	for _, want := range cases {
		t.Run(want.Op.String(), func(t *testing.T) {
			frame, err := enc.Response(&want)
			if err != nil {
				t.Fatal(err)
			}
			payload := frame[HeaderSize:]
			id, err := dec.ResponseID(payload)
			if err != nil || id != want.ID {
				t.Fatalf("ResponseID = %d, %v; want %d", id, err, want.ID)
			}
			got := Response{Op: want.Op}
			if err := dec.DecodeResponse(payload, &got); err != nil {
				t.Fatal(err)
			}
			if want.Op == OpList && want.List.Keys == nil {
				want.List.Keys = []string{}
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("round trip:\n got %+v\nwant %+v", got, want)
			}
		})
	}
}

// TestSpecExampleBytes pins the example frame printed in PROTOCOL.md.
func TestSpecExampleBytes(t *testing.T) {
	frame, err := NewEncoder().Request(&Request{ID: 1, Op: OpPing})
	if err != nil {
		t.Fatal(err)
	}
	want := "0000000d82a26964 01a26f70a470696e67"
	if got := hex.EncodeToString(frame); got != strings.ReplaceAll(want, " ", "") {
		t.Fatalf("ping frame = %s, want %s (update PROTOCOL.md §7 if the encoding changed on purpose)", got, want)
	}
}

// TestUnknownKeysIgnored checks that a request from a newer client, with
// fields this version does not know (nested ones included), decodes.
func TestUnknownKeysIgnored(t *testing.T) {
	payload, err := msgpack.Marshal(map[string]any{
		"id": 7, "op": "get", "key": "k",
		"trace":  map[string]any{"span": []any{1, "x", map[string]any{"deep": true}}},
		"future": 1.5,
	})
	if err != nil {
		t.Fatal(err)
	}
	var req Request
	if err := NewDecoder().DecodeRequest(payload, &req); err != nil {
		t.Fatal(err)
	}
	if req.ID != 7 || req.Op != OpGet || req.Key != "k" {
		t.Fatalf("decoded %+v", req)
	}
}

func TestUnknownOpKeepsName(t *testing.T) {
	payload, _ := msgpack.Marshal(map[string]any{"id": 1, "op": "frobnicate"})
	var req Request
	if err := NewDecoder().DecodeRequest(payload, &req); err != nil {
		t.Fatal(err)
	}
	if req.Op != OpInvalid || req.UnknownOp != "frobnicate" {
		t.Fatalf("decoded %+v", req)
	}
}

func TestDecodeRequestErrors(t *testing.T) {
	nested := bytes.Repeat([]byte{0x91}, 100) // [[[[...]]]]
	cases := []struct {
		name    string
		payload []byte
		want    string // substring of the error
		scanOK  bool   // a well-formed map: the server answers bad_request and keeps the connection
	}{
		{"not a map", []byte{0x93, 1, 2, 3}, "expected a map", false},
		{"garbage", []byte{0xc1, 0xff, 0x00}, "", false},
		{"truncated map", []byte{0x82, 0xa2, 'i', 'd'}, "", false},
		{"trailing bytes", append(mustMarshal(t, map[string]any{"id": 1, "op": "ping"}), 0x00), "after the request map", false},
		{"key of wrong type", mustMarshal(t, map[string]any{"id": 1, "op": "get", "key": 5}), `field "key"`, true},
		{"negative id", mustMarshal(t, map[string]any{"id": -1, "op": "get"}), `field "id"`, true},
		{"value as str, not bin", mustMarshal(t, map[string]any{"id": 1, "op": "set", "key": "k", "value": "text"}), "want a bin", true},
		{"ttl not an int", mustMarshal(t, map[string]any{"id": 1, "op": "set", "key": "k", "value": []byte("1"), "ttl": "soon"}), `field "ttl"`, true},
		{"deep nesting", append(mustMarshal(t, map[string]any{"id": 1})[:0:0], append([]byte{0x81, 0xa1, 'x'}, append(nested, 0xc0)...)...), "nested deeper", false},
		{"huge array claim", []byte{0x81, 0xa4, 'k', 'e', 'y', 's', 0xdd, 0x7f, 0xff, 0xff, 0xff}, "array of", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dec := NewDecoder()
			var req Request
			err := dec.DecodeRequest(tc.payload, &req)
			if err == nil {
				t.Fatal("decoded without error")
			}
			if !IsMalformed(err) {
				t.Fatalf("error %v does not report a malformed frame", err)
			}
			if tc.want != "" && !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not contain %q", err, tc.want)
			}
			_, scanErr := dec.Scan(tc.payload)
			if (scanErr == nil) != tc.scanOK {
				t.Fatalf("Scan error = %v, want ok=%v", scanErr, tc.scanOK)
			}
		})
	}
}

func mustMarshal(t *testing.T, v any) []byte {
	t.Helper()
	b, err := msgpack.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestReadFrame(t *testing.T) {
	cases := []struct {
		name  string
		input []byte
		max   int
		want  error
	}{
		{"ok", []byte{0, 0, 0, 2, 0x80, 0x00}, 10, nil},
		{"clean eof", nil, 10, errEOF},
		{"eof in prefix", []byte{0, 0}, 10, ErrTruncated},
		{"eof in payload", []byte{0, 0, 0, 5, 1, 2}, 10, ErrTruncated},
		{"too large", []byte{0xff, 0xff, 0xff, 0xff}, 1 << 20, ErrFrameTooLarge},
		{"just over", []byte{0, 0, 0, 11}, 10, ErrFrameTooLarge},
		{"empty", []byte{0, 0, 0, 0}, 10, ErrTruncated},
	}
	// Both ways of reading a length prefix: byte by byte from an
	// io.ByteReader (how the server reads, through a bufio.Reader), and
	// from any other io.Reader.
	readers := map[string]func([]byte) io.Reader{
		"byte reader":  func(b []byte) io.Reader { return bytes.NewReader(b) },
		"plain reader": func(b []byte) io.Reader { return struct{ io.Reader }{bytes.NewReader(b)} },
	}
	for _, tc := range cases {
		for rname, reader := range readers {
			t.Run(tc.name+"/"+rname, func(t *testing.T) {
				_, err := ReadFrame(reader(tc.input), tc.max, nil)
				if tc.want == errEOF {
					if err == nil || err.Error() != "EOF" {
						t.Fatalf("err = %v, want EOF", err)
					}
					return
				}
				if !errors.Is(err, tc.want) && !(tc.want == nil && err == nil) {
					t.Fatalf("err = %v, want %v", err, tc.want)
				}
			})
		}
	}
}

var errEOF = errors.New("EOF")

// TestReadFrameHeaderAllocatesNothing: the server reads every frame's
// length prefix through a bufio.Reader; doing so allocates nothing.
func TestReadFrameHeaderAllocatesNothing(t *testing.T) {
	stream := bytes.Repeat([]byte{0, 0, 0, 1}, 1000)
	br := bufio.NewReader(bytes.NewReader(stream))
	allocs := testing.AllocsPerRun(500, func() {
		if n, err := ReadFrameHeader(br, 10); n != 1 || err != nil {
			t.Fatalf("ReadFrameHeader = %d, %v", n, err)
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per length prefix, want 0", allocs)
	}
}

func TestOpNames(t *testing.T) {
	for _, op := range Ops() {
		if ParseOp(op.String()) != op {
			t.Errorf("ParseOp(%q) != %v", op.String(), op)
		}
	}
	if ParseOp("nope") != OpInvalid || ParseOp("") != OpInvalid {
		t.Error("unknown names must parse as OpInvalid")
	}
}

func TestErrorIs(t *testing.T) {
	err := error(&Error{Code: CodeQuotaExceeded, Message: "quota exceeded: x"})
	if !errors.Is(err, &Error{Code: CodeQuotaExceeded}) {
		t.Fatal("same code must match")
	}
	if errors.Is(err, &Error{Code: CodeBusy}) {
		t.Fatal("different code must not match")
	}
	resp := Response{Op: OpGet}
	frame, _ := NewEncoder().Response(&Response{ID: 1, Err: &Error{Code: "from_the_future", Message: "m"}})
	if err := NewDecoder().DecodeResponse(frame[HeaderSize:], &resp); err != nil {
		t.Fatal(err)
	}
	if resp.Err.Code != CodeInternal {
		t.Fatalf("unknown code decoded as %q, want internal", resp.Err.Code)
	}
}

// TestEncodeFieldsLongMap checks the map16 path of encodeFields, which no
// message of this version reaches (none has 16 fields): a table of 20
// fields must come out as a map that a plain msgpack decoder reads back.
func TestEncodeFieldsLongMap(t *testing.T) {
	type wide struct{ vals [20]int64 }
	var fields []mapField[wide]
	for i := range 20 {
		fields = append(fields, mapField[wide]{
			name:   "f" + strconv.Itoa(i),
			sent:   func(m *wide) bool { return m.vals[i] != 0 },
			encode: func(w *writer, m *wide) { w.int(m.vals[i]) },
		})
	}
	enc := NewEncoder()
	for _, n := range []int{0, 15, 16, 20} {
		var m wide
		for i := range n {
			m.vals[i] = int64(i + 1)
		}
		enc.start()
		enc.out.b = append(enc.out.b, 0x91) // an array around the map: what follows it must move with it
		encodeFields(&enc.w, fields, &m)
		enc.w.bool(true)
		frame, err := enc.finish()
		if err != nil {
			t.Fatal(err)
		}
		var got []any
		if err := msgpack.Unmarshal(append([]byte{0x92}, frame[HeaderSize+1:]...), &got); err != nil {
			t.Fatalf("%d fields: %v (payload %x)", n, err, frame[HeaderSize:])
		}
		if mp, ok := got[0].(map[string]any); !ok || len(mp) != n || got[1] != true {
			t.Fatalf("%d fields: decoded %v", n, got)
		}
		for i := range n {
			if v := got[0].(map[string]any)["f"+strconv.Itoa(i)]; v != int8(i+1) {
				t.Fatalf("%d fields: f%d = %v (%T)", n, i, v, v)
			}
		}
	}
}

// TestIDInAnyIntegerEncoding checks that ResponseID and Scan read an id
// written in a signed integer encoding, as PROTOCOL.md §2 lets a peer
// write integers, and treat a negative one as no id.
func TestIDInAnyIntegerEncoding(t *testing.T) {
	dec := NewDecoder()
	// {"id": int16 300, "result": nil}
	payload := []byte{0x82, 0xa2, 'i', 'd', 0xd1, 0x01, 0x2c, 0xa6, 'r', 'e', 's', 'u', 'l', 't', 0xc0}
	if id, err := dec.ResponseID(payload); err != nil || id != 300 {
		t.Fatalf("ResponseID = %d, %v; want 300", id, err)
	}
	if id, err := dec.Scan(payload); err != nil || id != 300 {
		t.Fatalf("Scan = %d, %v; want 300", id, err)
	}
	negative := []byte{0x82, 0xa2, 'i', 'd', 0xff, 0xa6, 'r', 'e', 's', 'u', 'l', 't', 0xc0} // id -1
	if id, err := dec.ResponseID(negative); err == nil {
		t.Fatalf("ResponseID of a negative id = %d, want an error", id)
	}
	if id, err := dec.Scan(negative); err != nil || id != 0 {
		t.Fatalf("Scan of a negative id = %d, %v; want 0 and no error", id, err)
	}
}
