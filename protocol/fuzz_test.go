package protocol

import (
	"bytes"
	"reflect"
	"testing"
)

// FuzzReadFrame feeds arbitrary byte streams to the frame reader and the
// request decoder, as a hostile peer could: neither may panic, a frame
// that decodes must re-encode to a request that decodes the same way, and
// decoding with Borrow (as the server does) must give the same request or
// the same error as decoding with copies.
func FuzzReadFrame(f *testing.F) {
	enc := NewEncoder()
	for _, req := range []Request{
		{ID: 0, Op: OpHello, Version: 1, Client: "fuzz"},
		{ID: 1, Op: OpSet, Key: "k", Value: []byte(`{"a":1}`), TTL: 1000},
		{ID: 2, Op: OpSetMany, Items: []Item{{Key: "a", Value: []byte("1"), TTL: 1}}},
		{ID: 3, Op: OpList, Prefix: "p", Cursor: "c", Limit: 5, Values: true},
		{ID: 4, Op: OpGetMany, Keys: []string{"a", "b"}},
	} {
		frame, err := enc.Request(&req)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(append([]byte(nil), frame...))
	}
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{0, 0, 0, 3, 0x91, 0x91, 0x91})
	f.Fuzz(func(t *testing.T, stream []byte) {
		r := bytes.NewReader(stream)
		dec := NewDecoder()
		borrowing := NewDecoder()
		borrowing.Borrow = true
		enc := NewEncoder()
		for i := 0; i < 8; i++ {
			payload, err := ReadFrame(r, 1<<16, nil)
			if err != nil {
				return
			}
			var req, borrowed Request
			err = dec.DecodeRequest(payload, &req)
			berr := borrowing.DecodeRequest(payload, &borrowed)
			if (err == nil) != (berr == nil) || err != nil && err.Error() != berr.Error() {
				t.Fatalf("decode: %v; with Borrow: %v", err, berr)
			}
			if err != nil {
				dec.Scan(payload) // must not panic either
				continue
			}
			if !reflect.DeepEqual(req, borrowed) {
				t.Fatalf("decoded %+v; with Borrow %+v", req, borrowed)
			}
			if req.Op == OpInvalid {
				continue // unknown ops are not re-encodable by name
			}
			frame, err := enc.Request(&req)
			if err != nil {
				t.Fatalf("re-encode %+v: %v", req, err)
			}
			var again Request
			if err := dec.DecodeRequest(frame[HeaderSize:], &again); err != nil {
				t.Fatalf("decode re-encoded %+v: %v", req, err)
			}
		}
	})
}

// FuzzDecodeResponse checks that the client side survives any response
// payload, for every op's result shape.
func FuzzDecodeResponse(f *testing.F) {
	enc := NewEncoder()
	for _, resp := range []Response{
		{ID: 1, Op: OpGet, Found: true, Value: []byte("v")},
		{ID: 2, Op: OpList, List: ListResult{Keys: []string{"a"}, Values: [][]byte{[]byte("x")}, Cursor: "a"}},
		{ID: 3, Op: OpHello, Hello: HelloResult{Version: 1, Project: "p"}},
		{ID: 4, Err: &Error{Code: CodeBusy, Message: "busy"}},
	} {
		frame, _ := enc.Response(&resp)
		f.Add(append([]byte(nil), frame[HeaderSize:]...), uint8(resp.Op))
	}
	f.Fuzz(func(t *testing.T, payload []byte, op uint8) {
		dec := NewDecoder()
		dec.ResponseID(payload)
		resp := Response{Op: Op(op % uint8(opCount))}
		dec.DecodeResponse(payload, &resp)
	})
}
