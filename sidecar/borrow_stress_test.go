package sidecar_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/kvsidecar/kvsidecar/client"
	"github.com/kvsidecar/kvsidecar/sidecar/sidecartest"
	"github.com/kvsidecar/kvsidecar/store/postgres/pgtest"
)

// valueOf is the value stored under key in the stress tests: it names the
// key, so that a value answered or stored for the wrong key is seen.
func valueOf(key string) string { return "value of " + key + "|" + key }

// TestBorrowedFramesUnderStress: many connections pipeline sets whose
// value names their key, some with timeouts so short that the requests are
// answered unavailable while their writes are still queued, and gets of a
// few hot keys that every connection reads, so that one read round holds
// the same key from several connections' frames; other connections close
// with sets in flight. Every get must answer its own key's value, and
// every value stored must be its key's: a frame buffer read into again
// while the store still used a view of it would answer or store another
// request's bytes.
func TestBorrowedFramesUnderStress(t *testing.T) {
	if testing.Short() {
		t.Skip("stress test")
	}
	t.Run("postgres", func(t *testing.T) {
		stressBorrowed(t, sidecartest.Options{Postgres: pgtest.Database(t)})
	})
	t.Run("embedded", func(t *testing.T) { stressBorrowed(t, sidecartest.Options{}) })
}

func stressBorrowed(t *testing.T, opts sidecartest.Options) {
	d := sidecartest.Start(t, opts)
	const (
		conns    = 8
		callers  = 8 // goroutines per connection, pipelining on it
		hot      = 32
		rounds   = 150
		ownWrite = 40
	)
	ctx := context.Background()
	clients := make([]*client.Client, conns)
	for i := range clients {
		c, err := client.Dial(ctx, d.Socket)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		clients[i] = c
	}
	hotKey := func(i int) string { return fmt.Sprintf("hot-%02d", i) }
	for i := range hot {
		if err := clients[0].SetBytes(ctx, hotKey(i), []byte(valueOf(hotKey(i))), 0); err != nil {
			t.Fatal(err)
		}
	}

	var wg sync.WaitGroup
	var mu sync.Mutex
	var written []string
	for ci, c := range clients {
		for g := range callers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for r := range rounds {
					k := hotKey((ci*callers + g + r) % hot)
					v, found, err := c.GetBytes(ctx, k)
					if err != nil || !found || string(v) != valueOf(k) {
						t.Errorf("get %s: %q (found %v, %v); want %q", k, v, found, err, valueOf(k))
						return
					}
					if r >= ownWrite {
						continue
					}
					// A write of its own, with a timeout short enough that
					// it is often answered unavailable before the store
					// has it.
					key := fmt.Sprintf("own-%d-%d-%d", ci, g, r)
					wctx, cancel := context.WithTimeout(ctx, time.Duration(1+r%3)*time.Millisecond)
					c.SetBytes(wctx, key, []byte(valueOf(key)), 0)
					cancel()
					mu.Lock()
					written = append(written, key)
					mu.Unlock()
				}
			}()
		}
	}
	// Connections that close with sets in flight.
	for ci := range 4 {
		c, err := client.Dial(ctx, d.Socket)
		if err != nil {
			t.Fatal(err)
		}
		for g := range callers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for r := 0; ; r++ {
					key := fmt.Sprintf("closing-%d-%d-%d", ci, g, r)
					mu.Lock()
					written = append(written, key)
					mu.Unlock()
					if c.SetBytes(ctx, key, []byte(valueOf(key)), 0) != nil {
						return // closed
					}
				}
			}()
		}
		time.AfterFunc(time.Duration(5+ci)*time.Millisecond, func() { c.Close() })
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	// Whatever of those writes was stored is its own key's.
	stored := 0
	for _, key := range written {
		v, found, err := clients[0].GetBytes(ctx, key)
		if err != nil {
			t.Fatalf("get %s: %v", key, err)
		}
		if found {
			stored++
			if string(v) != valueOf(key) {
				t.Fatalf("stored under %s: %q; want %q", key, v, valueOf(key))
			}
		}
	}
	t.Logf("%d of %d writes with short timeouts or on closing connections stored", stored, len(written))
}
