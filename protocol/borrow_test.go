package protocol

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
)

// TestBorrowDecodesTheSame decodes requests of every size class of key and
// value (fixstr, str8, str16, str32; bin8, bin16, bin32; empty) with and
// without Borrow: the requests must be equal, and the borrowed Key and
// Value must be the payload's own bytes — what the server relies on to hand
// a request's frame buffer to its store op instead of copying.
func TestBorrowDecodesTheSame(t *testing.T) {
	enc := NewEncoder()
	for _, req := range []Request{
		{ID: 1, Op: OpGet, Key: "k"},
		{ID: 2, Op: OpSet, Key: strings.Repeat("a", 31), Value: []byte{}},
		{ID: 3, Op: OpSet, Key: strings.Repeat("b", 32), Value: bytes.Repeat([]byte("v"), 255), TTL: 5, HasIfVersion: true, IfVersion: 7},
		{ID: 4, Op: OpSet, Key: strings.Repeat("c", 300), Value: bytes.Repeat([]byte("w"), 300)},
		{ID: 5, Op: OpSet, Key: strings.Repeat("d", 70000), Value: bytes.Repeat([]byte("x"), 70000)},
		{ID: 6, Op: OpDelete, Key: "gone"},
		{ID: 7, Op: OpSetMany, Items: []Item{{Key: "a", Value: []byte("1")}}},
		{ID: 8, Op: OpGetMany, Keys: []string{"a", "b"}},
	} {
		frame, err := enc.Request(&req)
		if err != nil {
			t.Fatal(err)
		}
		payload := bytes.Clone(frame[HeaderSize:])
		var copied, borrowed Request
		if err := NewDecoder().DecodeRequest(payload, &copied); err != nil {
			t.Fatalf("request %d: %v", req.ID, err)
		}
		dec := NewDecoder()
		dec.Borrow = true
		if err := dec.DecodeRequest(payload, &borrowed); err != nil {
			t.Fatalf("request %d, borrowed: %v", req.ID, err)
		}
		if !reflect.DeepEqual(copied, borrowed) {
			t.Fatalf("request %d: borrowed %+v, copied %+v", req.ID, borrowed, copied)
		}
		if !reflect.DeepEqual(borrowed, req) {
			t.Fatalf("request %d: decoded %+v, sent %+v", req.ID, borrowed, req)
		}

		// The borrowed fields are views of the payload: overwrite it and
		// they change; after Own they no longer do.
		owned := borrowed
		owned.Own()
		for i := range payload {
			payload[i] = 'Z'
		}
		if req.Key != "" && borrowed.Key == req.Key {
			t.Errorf("request %d: the borrowed key did not change with its payload", req.ID)
		}
		if len(req.Value) > 0 && bytes.Equal(borrowed.Value, req.Value) {
			t.Errorf("request %d: the borrowed value did not change with its payload", req.ID)
		}
		if len(borrowed.Value) > 0 && cap(borrowed.Value) != len(borrowed.Value) {
			t.Errorf("request %d: the borrowed value may be appended to over the payload", req.ID)
		}
		if !reflect.DeepEqual(owned, req) {
			t.Errorf("request %d: after Own %+v, want %+v", req.ID, owned, req)
		}
		if !reflect.DeepEqual(copied, req) {
			t.Errorf("request %d: a copied request changed with its payload", req.ID)
		}
	}
}

// TestBorrowRefusesWhatCopyingRefuses: a truncated or mistyped key or value
// is an error with Borrow as without, with the same message.
func TestBorrowRefusesWhatCopyingRefuses(t *testing.T) {
	for name, payload := range map[string][]byte{
		"key longer than the frame":   {0x82, 0xa2, 'o', 'p', 0xa3, 'g', 'e', 't', 0xa3, 'k', 'e', 'y', 0xd9, 0x40, 'a'},
		"key as bin":                  {0x81, 0xa3, 'k', 'e', 'y', 0xc4, 0x01, 'a'},
		"value as str":                {0x81, 0xa5, 'v', 'a', 'l', 'u', 'e', 0xa1, 'a'},
		"value longer than the frame": {0x81, 0xa5, 'v', 'a', 'l', 'u', 'e', 0xc5, 0x01, 0x00, 'a'},
		"value header cut":            {0x81, 0xa5, 'v', 'a', 'l', 'u', 'e', 0xc6, 0x00},
	} {
		t.Run(name, func(t *testing.T) {
			var a, b Request
			errCopy := NewDecoder().DecodeRequest(payload, &a)
			dec := NewDecoder()
			dec.Borrow = true
			errBorrow := dec.DecodeRequest(payload, &b)
			if errCopy == nil || errBorrow == nil || errCopy.Error() != errBorrow.Error() {
				t.Fatalf("copying: %v; borrowing: %v; want the same error", errCopy, errBorrow)
			}
		})
	}
}

// TestBorrowAllocatesNothing: decoding a set or a get with Borrow
// allocates nothing, which is what spares the server an allocation per
// request.
func TestBorrowAllocatesNothing(t *testing.T) {
	for _, req := range []Request{
		{ID: 12345, Op: OpSet, Key: "user:12345", Value: benchValue, TTL: 60000},
		{ID: 12346, Op: OpGet, Key: strings.Repeat("k", 40)},
	} {
		frame, _ := NewEncoder().Request(&req)
		payload := bytes.Clone(frame[HeaderSize:])
		dec := NewDecoder()
		dec.Borrow = true
		var got Request
		allocs := testing.AllocsPerRun(100, func() {
			if err := dec.DecodeRequest(payload, &got); err != nil {
				t.Fatal(err)
			}
		})
		if allocs != 0 {
			t.Errorf("%s: %v allocations per decode, want 0", req.Op, allocs)
		}
	}
}
