package postgres

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/kvsidecar/kvsidecar/store/postgres/pgtest"
)

// TestSecondReadRoundInFlight: with Config.SecondReadRound, reads that
// queue behind a round in flight go out in a second round, on the reader's
// second connection, while the first is still unanswered (the database is
// frozen), once enough of them wait; and every read gets its own key's
// value once the database answers.
func TestSecondReadRoundInFlight(t *testing.T) {
	c := pgtest.NewCluster(t)
	cfg := testConfig(c.DSN())
	cfg.StatementTimeout = time.Minute // far beyond the freeze
	cfg.SecondReadRound = 2
	s := openStore(t, cfg)
	ctx := context.Background()
	const n = 3
	for i := range n {
		if err := s.Set(ctx, "p", fmt.Sprintf("k%d", i), []byte(fmt.Sprintf("value of k%d", i)), 0); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := s.Get(ctx, "p", "k0"); err != nil { // the first connection's statements
		t.Fatal(err)
	}
	c.Freeze()
	defer c.Thaw()

	got := make(chan error, n)
	get := func(i int) {
		key := fmt.Sprintf("k%d", i)
		v, ok, err := s.Get(ctx, "p", key)
		if err == nil && (!ok || string(v) != "value of "+key) {
			err = fmt.Errorf("get %s = %q, %v", key, v, ok)
		}
		got <- err
	}
	go get(0)
	waitUntil(t, "the first round to be in flight", func() bool {
		return s.readConns[0].busy.Load() && s.readQ.Len() == 0
	})
	go get(1)
	waitUntil(t, "the second read to queue", func() bool { return s.readQ.Len() == 1 })
	if s.readConns[1].busy.Load() {
		t.Fatal("a second round went out for one waiting read; want it to wait for SecondReadRound (2)")
	}
	go get(2)
	waitUntil(t, "a second round in flight beside the first", func() bool {
		return s.readConns[1].busy.Load() && s.readQ.Len() == 0
	})
	c.Thaw()
	for range n {
		if err := <-got; err != nil {
			t.Fatal(err)
		}
	}
}

// waitUntil polls cond until it holds, failing the test after 30 seconds:
// the test asserts on what happens, not on how long it takes.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}
