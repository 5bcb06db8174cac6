package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/kvsidecar/kvsidecar/client"
	"github.com/kvsidecar/kvsidecar/store/postgres/pgtest"
)

// counterDoc is the document the Update tests rewrite: a count, and how
// many increments each writer made, so a lost or doubled update shows as a
// wrong total and names the writer.
type counterDoc struct {
	N  int            `json:"n"`
	By map[string]int `json:"by"`
}

// hammerUpdate runs 64 goroutines, spread over clients, each applying
// updatesEach increments to one document with client.Update, and checks
// that every increment was applied exactly once.
func hammerUpdate(t *testing.T, clients []*client.Client) {
	t.Helper()
	const goroutines, updatesEach = 64, 5
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, goroutines)
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := clients[g%len(clients)]
			me := fmt.Sprint("w", g)
			for range updatesEach {
				_, err := client.Update(ctx, c, "doc", func(old *counterDoc, found bool) (counterDoc, error) {
					next := counterDoc{By: map[string]int{}}
					if found {
						next = *old
					}
					next.N++
					next.By[me]++
					return next, nil
				})
				if err != nil {
					errs <- fmt.Errorf("%s: %w", me, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	var doc counterDoc
	if found, err := clients[0].Get(ctx, "doc", &doc); err != nil || !found {
		t.Fatalf("get doc: %v, found %v", err, found)
	}
	if doc.N != goroutines*updatesEach {
		t.Fatalf("the document counts %d increments, want %d", doc.N, goroutines*updatesEach)
	}
	for g := range goroutines {
		if n := doc.By[fmt.Sprint("w", g)]; n != updatesEach {
			t.Fatalf("writer w%d is counted %d times, want %d", g, n, updatesEach)
		}
	}
}

// TestUpdateAcrossTwoDaemonProcesses: two daemon processes on one
// PostgreSQL database, 64 goroutines updating one key through both.
func TestUpdateAcrossTwoDaemonProcesses(t *testing.T) {
	dsn := pgtest.Database(t)
	dir, err := os.MkdirTemp("", "kvsup")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sockets := []string{filepath.Join(dir, "a.sock"), filepath.Join(dir, "b.sock")}
	startDaemon(t, sockets[0], "--postgres", dsn, "--project", "shared")
	startDaemon(t, sockets[1], "--postgres", dsn, "--project", "shared")
	hammerUpdate(t, dialAll(t, sockets...))
}

// TestUpdateOnTheEmbeddedStore: the same on one daemon process with the
// embedded store, through two client connections.
func TestUpdateOnTheEmbeddedStore(t *testing.T) {
	dir, err := os.MkdirTemp("", "kvsup")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	socket := filepath.Join(dir, "kv.sock")
	startDaemon(t, socket, "--data-dir", filepath.Join(dir, "data"))
	hammerUpdate(t, dialAll(t, socket, socket))
}

func dialAll(t *testing.T, sockets ...string) []*client.Client {
	t.Helper()
	clients := make([]*client.Client, len(sockets))
	for i, s := range sockets {
		c, err := client.Dial(context.Background(), s)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		clients[i] = c
	}
	return clients
}
