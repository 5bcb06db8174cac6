package postgres

import (
	"context"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/kvsidecar/kvsidecar/store"
	"github.com/kvsidecar/kvsidecar/store/postgres/pgtest"
)

// TestKeyLimitFitsTheIndex: a key limit the primary key index cannot hold
// is refused at Open, naming the limit, instead of failing every long key
// at insert time as an outage would.
func TestKeyLimitFitsTheIndex(t *testing.T) {
	_, err := Open(context.Background(), Config{DSN: "postgres://unused", Limits: store.Limits{MaxKeyBytes: 4096}})
	if err == nil || !strings.Contains(err.Error(), "2048") {
		t.Fatalf("Open with a 4096-byte key limit: %v", err)
	}
}

// TestLongestKeyStored stores a key of exactly MaxKeyBytes under the
// longest project name: the index takes it.
func TestLongestKeyStored(t *testing.T) {
	cfg := testConfig(testSchema(t, pgtest.Database(t)))
	cfg.Limits.MaxKeyBytes = MaxKeyBytes
	s := openStore(t, cfg)
	ctx := context.Background()
	project := strings.Repeat("p", 255)
	// Random letters: a repeated one would compress and prove nothing.
	b := make([]byte, MaxKeyBytes)
	for i := range b {
		b[i] = byte('a' + rand.IntN(26))
	}
	key := string(b)
	if err := s.Set(ctx, project, key, []byte("1"), 0); err != nil {
		t.Fatal(err)
	}
	if _, found, err := s.Get(ctx, project, key); err != nil || !found {
		t.Fatalf("get: found=%v err=%v", found, err)
	}
}

// TestSecondReadRoundNeedsAConnection: with SecondReadRound the reader
// keeps two connections, so a pool without room for them is refused at
// Open, naming the limit.
func TestSecondReadRoundNeedsAConnection(t *testing.T) {
	_, err := Open(context.Background(), Config{DSN: "postgres://unused", Committers: 2, MaxConns: 4, SecondReadRound: 8})
	if err == nil || !strings.Contains(err.Error(), "Committers+3 (5)") {
		t.Fatalf("Open with 4 connections for 2 committers and a second read round: %v", err)
	}
}
