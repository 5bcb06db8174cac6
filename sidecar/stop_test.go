package sidecar_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kvsidecar/kvsidecar/protocol"
	"github.com/kvsidecar/kvsidecar/sidecar/sidecartest"
	"github.com/kvsidecar/kvsidecar/store/postgres/pgtest"
)

// TestStopWhileWriteOnReadLoop stops the daemon while a connection's only
// in-flight slot holds a lone set, with requests buffered behind it: the
// set's answer comes, and the set is committed, then the stopping frame;
// the requests behind it are not read (TestStopWhileAtInflightBound). The
// set waits for its project's usage row, which another connection holds
// locked until the stop has begun. Before the read loop looked at the stop
// before each frame, it read the next buffered frame or stopped at random,
// so the test runs three times.
func TestStopWhileWriteOnReadLoop(t *testing.T) {
	for round := range 3 {
		dsn := pgtest.Database(t)
		d := sidecartest.Start(t, sidecartest.Options{Postgres: dsn, MaxInflight: 1})
		c := dialRaw(t, d.Socket)
		c.hello()
		if r := c.call(&protocol.Request{ID: 1, Op: protocol.OpSet, Key: "warm", Value: []byte("0")}); r.Err != nil {
			t.Fatalf("round %d: first set: %v", round, r.Err)
		}
		ctx := context.Background()
		locker, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		tx, err := locker.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, `SELECT 1 FROM kv_usage WHERE project = 'test' FOR UPDATE`); err != nil {
			t.Fatal(err)
		}
		c.sendAll([]*protocol.Request{
			{ID: 2, Op: protocol.OpSet, Key: "k", Value: []byte("1"), Timeout: 60000},
			{ID: 3, Op: protocol.OpPing},
			{ID: 4, Op: protocol.OpPing},
		})
		waitUntil(t, "the set to wait for the usage row's lock", func() bool {
			var n int
			err := locker.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&n)
			return err == nil && n > 0
		})
		stopped := make(chan struct{})
		go func() { d.Stop(); close(stopped) }()
		waitUntil(t, "the daemon to stop accepting", func() bool {
			nc, err := net.Dial("unix", d.Socket)
			if err == nil {
				nc.Close()
			}
			return err != nil
		})
		time.Sleep(100 * time.Millisecond) // the stop reaches the connections after the listener
		if err := tx.Rollback(ctx); err != nil {
			t.Fatal(err)
		}
		var ids []uint64
		for {
			r, ok := c.read()
			if !ok {
				break
			}
			ids = append(ids, r.ID)
			switch r.ID {
			case 2:
				if r.Err != nil || r.Version == 0 {
					t.Errorf("round %d: the set's answer: %+v, version %d; want it committed", round, r.Err, r.Version)
				}
			case 0:
				if r.Err == nil || r.Err.Code != protocol.CodeUnavailable {
					t.Errorf("round %d: id 0: %+v, want unavailable", round, r.Err)
				}
			}
		}
		<-stopped
		if len(ids) != 2 || ids[0] != 2 || ids[1] != 0 {
			t.Fatalf("round %d: got responses %v before the close, want [2 0]: the set's answer, then the stopping frame", round, ids)
		}
		var value []byte
		if err := locker.QueryRow(ctx, `SELECT value FROM kv_entries WHERE project = 'test' AND key = 'k'`).Scan(&value); err != nil || string(value) != "1" {
			t.Fatalf("round %d: the answered set in the table: %q, %v; want %q", round, value, err, "1")
		}
		locker.Close(ctx)
	}
}
