package sidecar_test

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/kvsidecar/kvsidecar/protocol"
	"github.com/kvsidecar/kvsidecar/sidecar"
)

// TestRoundFrameBuffersOutliveTheirRequests: a request on the round path
// hands its store op views of its frame's buffer (its key and, for a set,
// its value) and keeps the buffer until it is answered, and the read loop
// reads later frames into buffers no request holds. Sets of distinct keys
// and values, of sizes around every bound of those buffers (frames beyond
// 1 KiB and 64 KiB, keys near the limit, empty values), are pipelined to a
// store that applies each write after a random delay, so that many frames
// are read while earlier ops still read theirs; every second set names
// the key of the one before it, so it waits on the goroutine path with
// copies of its own. Every answer, every value stored and every get must
// be the request's own: a buffer reused too early would store or answer
// another request's bytes (and, under -race, be reported as a race).
func TestRoundFrameBuffersOutliveTheirRequests(t *testing.T) {
	async := &asyncStore{maxDelay: time.Millisecond}
	srv := startRoundServer(t, async, sidecar.Config{})
	c := dialRaw(t, srv.socket)
	c.hello()

	keyLens := []int{1, 31, 32, 200, 1000}
	valueLens := []int{0, 1, 100, 900, 1100, 5000, 70000}
	want := map[string][]byte{}
	var keys []string
	id := uint64(0)
	for batch := range 8 {
		var reqs []*protocol.Request
		for i := range 40 {
			n := batch*40 + i
			key := fmt.Sprintf("%d:", n)
			key += strings.Repeat(string(rune('a'+n%26)), max(keyLens[n%len(keyLens)]-len(key), 0))
			if n%2 == 1 {
				key = keys[len(keys)-1] // the previous set's key: ordered after it
			} else {
				keys = append(keys, key)
			}
			value := bytes.Repeat([]byte{byte('A' + n%26)}, valueLens[n%len(valueLens)])
			copy(value, fmt.Sprint(n))
			want[key] = value
			id++
			reqs = append(reqs, &protocol.Request{ID: id, Op: protocol.OpSet, Key: key, Value: value})
		}
		c.sendAll(reqs)
		got := c.readN(len(reqs))
		for _, r := range reqs {
			if g := got[r.ID]; g == nil || g.Err != nil || g.Op != protocol.OpSet {
				t.Fatalf("set %d (key of %d bytes, value of %d): %+v", r.ID, len(r.Key), len(r.Value), g)
			}
		}
	}

	// Gets, pipelined the same way, answered inside Do.
	for start := 0; start < len(keys); start += 30 {
		var reqs []*protocol.Request
		for _, key := range keys[start:min(start+30, len(keys))] {
			id++
			reqs = append(reqs, &protocol.Request{ID: id, Op: protocol.OpGet, Key: key})
		}
		c.sendAll(reqs)
		got := c.readN(len(reqs))
		for _, r := range reqs {
			g := got[r.ID]
			if g == nil || g.Err != nil || !g.Found || !bytes.Equal(g.Value, want[r.Key]) {
				t.Fatalf("get of key %.20q…: %+v, want the value of %d bytes set last", r.Key, g, len(want[r.Key]))
			}
		}
	}
	for _, key := range keys {
		v, found, err := async.Store.GetVersioned(context.Background(), "round", key)
		if err != nil || !found || !bytes.Equal(v.Value, want[key]) {
			t.Fatalf("stored under key %.20q…: %d bytes (found %v, %v), want the %d set last", key, len(v.Value), found, err, len(want[key]))
		}
	}
}
