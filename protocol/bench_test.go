package protocol

import (
	"bytes"
	"testing"
)

var benchValue = bytes.Repeat([]byte("x"), 100)

func BenchmarkEncodeSetRequest(b *testing.B) {
	enc := NewEncoder()
	req := &Request{ID: 12345, Op: OpSet, Key: "user:12345", Value: benchValue, TTL: 60000}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := enc.Request(req); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeSetRequest(b *testing.B) {
	frame, _ := NewEncoder().Request(&Request{ID: 12345, Op: OpSet, Key: "user:12345", Value: benchValue, TTL: 60000})
	payload := append([]byte(nil), frame[HeaderSize:]...)
	dec := NewDecoder()
	var req Request
	b.ReportAllocs()
	for b.Loop() {
		if err := dec.DecodeRequest(payload, &req); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncodeGetResponse(b *testing.B) {
	enc := NewEncoder()
	resp := &Response{ID: 12345, Op: OpGet, Found: true, Value: benchValue}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := enc.Response(resp); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeGetResponse(b *testing.B) {
	frame, _ := NewEncoder().Response(&Response{ID: 12345, Op: OpGet, Found: true, Value: benchValue})
	payload := append([]byte(nil), frame[HeaderSize:]...)
	dec := NewDecoder()
	var resp Response
	b.ReportAllocs()
	for b.Loop() {
		id, err := dec.ResponseID(payload)
		if err != nil || id != 12345 {
			b.Fatal(id, err)
		}
		resp.Op = OpGet
		if err := dec.DecodeResponse(payload, &resp); err != nil {
			b.Fatal(err)
		}
	}
}
