package postgres

import (
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/kvsidecar/kvsidecar/store"
)

// Defaults of Config.
const (
	// DefaultCommitters is the number of transactions one daemon keeps in
	// flight. Writes of one project always go through the same committer
	// (they serialize on the project's usage row anyway, in every daemon), so
	// more committers only help when several projects write at once; four
	// keep a small PostgreSQL busy without holding many connections per
	// daemon.
	DefaultCommitters = 4
	// DefaultMaxConns is the pool size: one connection per committer, one
	// for the reader, one for the sweeper, and the rest for List, Usage and
	// the admin calls, which do not go through a queue.
	DefaultMaxConns = DefaultCommitters + 6
	// DefaultStatementTimeout bounds each statement on the server and each
	// transaction or read round trip on the client. Batches take
	// milliseconds; a statement that runs for seconds means the database is
	// in trouble, and callers are better served by ErrUnavailable than by
	// waiting longer.
	DefaultStatementTimeout = 5 * time.Second
	// DefaultQueueSize bounds the write calls waiting for a committer, over
	// all committers. It holds a couple of full batches per committer, so
	// under load a committer always finds its next batch ready; beyond that
	// callers wait to enqueue (and get ErrBusy when their context ends)
	// instead of piling up memory and queueing delay behind a slow database.
	DefaultQueueSize = 4 * DefaultMaxBatch
	// DefaultMaxBatch bounds the items (a SetMany counts each of its items)
	// of one transaction. A few hundred ~100-byte writes cost PostgreSQL
	// about as much as the commit's WAL flush, so beyond this size
	// throughput gains little while the first writer of a batch waits longer
	// and the project's usage row stays locked longer. A single call larger
	// than this (a SetMany of store.MaxBatchItems) still goes alone.
	DefaultMaxBatch = 256
	// DefaultSweepInterval is how often the background sweeper deletes
	// expired entries. Expired entries are invisible and cost no quota from
	// the moment they expire; sweeping only reclaims space, so it need not
	// be prompt.
	DefaultSweepInterval = 30 * time.Second
	// DefaultSweepBatch bounds the entries one Sweep deletes, so that one
	// sweep holds a project's usage row for milliseconds, not seconds.
	DefaultSweepBatch = 1000
	// DefaultSearchScan bounds the rows one SearchKeys statement looks at:
	// scanning this many index entries takes tens of milliseconds, so a
	// search for a rare substring in a large project is many short
	// statements, far inside the statement timeout, instead of one that
	// runs out of it.
	DefaultSearchScan = 100_000
	// DefaultAnalysisTimeout bounds the statements of the admin's analyses
	// of a whole project (usage by prefix, largest keys, bytes due to
	// expire), which read all of its entries: a project of millions takes
	// seconds, more than a request's statement is given.
	DefaultAnalysisTimeout = time.Minute
	// DefaultProjectQueueShare is the share of a queue one project may
	// hold: a quarter, so that at least four projects flooding at once are
	// needed to fill a committer's queue or the reader's.
	DefaultProjectQueueShare = 0.25
	// DefaultLeaseLifetime is how long a quota lease lasts after its last
	// write (lease.go) before another daemon may fold it: the longest a
	// daemon that died holding one keeps its unused reservation from its
	// project. A live holder extends it with every write and returns it
	// when its queue empties, so it only matters after a crash; ten
	// seconds is far above any transaction's duration (the statement
	// timeout is five).
	DefaultLeaseLifetime = 10 * time.Second
)

// MaxKeyBytes is the longest key limit the backend accepts: a btree index
// entry holds at most about a third of an 8 kB page (2704 bytes), and the
// primary key's entry holds the project name (at most 255 bytes) too.
const MaxKeyBytes = 2048

// maxBatchBytes bounds the keys and values of one write transaction (the
// first call of a batch always goes in, however large), so that a run of
// large SetMany calls does not build a transaction of gigabytes in memory.
const maxBatchBytes = 16 << 20

// turnBytes is what one project may add to a write transaction in its turn
// of the round robin (batch.Config.TurnBytes), so that a project of small
// writes is not rationed to one write per turn by a neighbour's large ones.
const turnBytes = 64 << 10

// Config configures Open. The zero value of every field but DSN is usable.
type Config struct {
	// DSN is the PostgreSQL connection string, in any form pgx parses (URL or
	// key=value). Required.
	DSN string
	// Limits are the key and value size limits; zero fields take the store
	// defaults (store.DefaultMaxKeyBytes, store.DefaultMaxValueBytes).
	Limits store.Limits
	// DefaultQuota is the quota in bytes of projects without an override.
	// The default quota lives in the database, so that every daemon agrees:
	// when > 0 it is written there at Open, replacing what SetDefaultQuota
	// stored before; when 0 the database's value stays, or store.DefaultQuota
	// if it has none.
	DefaultQuota int64
	// MaxConns is the most connections the pool opens. 0 means
	// DefaultMaxConns. It must leave room for the committers, the reader and
	// the sweeper: at least Committers+2, or Committers+3 with
	// SecondReadRound (the reader then keeps two).
	MaxConns int32
	// StatementTimeout is sent to the server as statement_timeout and also
	// bounds, on the client, each write transaction, each read round trip
	// and each admin call, so that no call hangs when the database does not
	// answer. The server also ends a transaction left idle by a vanished
	// daemon after twice this (idle_in_transaction_session_timeout). 0 means
	// DefaultStatementTimeout.
	StatementTimeout time.Duration
	// Committers is the number of goroutines that commit writes, each with
	// its own queue and at most one transaction in flight. Writes are
	// partitioned by project, so the writes of one project stay in order
	// (but see Leases). 0 means DefaultCommitters.
	Committers int
	// QueueSize bounds the write calls waiting to be committed, over all
	// committers, and separately the point reads waiting for the reader.
	// 0 means DefaultQueueSize.
	QueueSize int
	// MaxBatch bounds the items of one write batch and the keys of one read
	// round. 0 means DefaultMaxBatch.
	MaxBatch int
	// SweepInterval is how often the background sweeper deletes expired
	// entries. 0 means DefaultSweepInterval; < 0 disables the sweeper (Sweep
	// can still be called).
	SweepInterval time.Duration
	// SweepBatch is the most entries one Sweep deletes, and the most
	// expired entries a write transaction deletes for a write that does not
	// fit its quota without them: a write that needs more waits for the
	// next transaction (its project's later writes with it), so that a
	// purge of millions of rows goes in slices between other projects'
	// writes. 0 means DefaultSweepBatch.
	SweepBatch int
	// SearchScan is the most rows one SearchKeys statement looks at before
	// it returns a page cut short. 0 means DefaultSearchScan.
	SearchScan int
	// AnalysisTimeout bounds each of the admin's analyses of a whole
	// project. 0 means DefaultAnalysisTimeout.
	AnalysisTimeout time.Duration
	// ProjectQueueShare is the share of each queue — a committer's share
	// of QueueSize, and the reader's QueueSize — that the waiting calls of
	// one project may take, in (0, 1]. The committers and the reader serve
	// projects round-robin in any case; this bounds the slots a flooding
	// project holds: its calls beyond it wait and fail with store.ErrBusy
	// when their context ends, while other projects' calls still enter.
	// 0 means DefaultProjectQueueShare.
	ProjectQueueShare float64
	// SecondReadRound, if positive, lets a second read round go out on a
	// second connection while one is in flight, once at least this many
	// reads wait behind it, so that the database's work on one round and
	// the round trip of the other overlap. 0 (the default) keeps one round
	// in flight: see docs/PERFORMANCE.md for why.
	SecondReadRound int
	// Leases lets committers take quota leases (lease.go): a committer
	// whose batches of a project come back to back reserves a slice of
	// its remaining quota and writes its Sets under it, so that the
	// project's transactions overlap instead of each waiting for the one
	// before it to commit. Quotas stay exact and versions increasing
	// either way. Off by default: on the reference machine (two cores
	// shared by the daemon, PostgreSQL and the load) the smaller
	// transactions cost PostgreSQL more CPU per write than the overlap
	// saved in waiting (docs/PERFORMANCE.md). Daemons with and without it
	// may share a database.
	Leases bool
	// LeaseLifetime is how long a quota lease outlives its last write, for
	// a daemon that died holding it: after it, any daemon may fold it. 0
	// means DefaultLeaseLifetime.
	LeaseLifetime time.Duration
	// Now, if set, is the clock used for TTLs: its reading is sent as a
	// parameter with every statement that needs the time. nil means the
	// database's clock (now()), so that every daemon of a cluster agrees on
	// what has expired; set it only in tests.
	Now func() time.Time
	// ObserveBatch, if set, is called after each write transaction commits
	// and before its callers are answered, with the number of write calls
	// it committed. (A batch of Sets some of whose projects are close to
	// their quota takes two transactions.) It runs on a committer goroutine,
	// so it must be fast (a histogram observation).
	ObserveBatch func(n int)
	// Logger receives the store's own events: sweeper failures and batches
	// retried one call at a time. Errors returned to callers are not logged.
	// nil means zap.NewNop().
	Logger *zap.Logger
}

// withDefaults returns c with zero fields set to their defaults, or an error
// naming the first field that is out of range.
func (c Config) withDefaults() (Config, error) {
	if c.DSN == "" {
		return c, errors.New("config: DSN is empty")
	}
	if c.DefaultQuota < 0 {
		return c, fmt.Errorf("config: DefaultQuota is negative (%d)", c.DefaultQuota)
	}
	c.Limits = c.Limits.WithDefaults()
	if c.Limits.MaxKeyBytes > MaxKeyBytes {
		return c, fmt.Errorf("config: the key limit %d bytes is more than the PostgreSQL backend can index (%d bytes)", c.Limits.MaxKeyBytes, MaxKeyBytes)
	}
	if c.Committers <= 0 {
		c.Committers = DefaultCommitters
	}
	if c.MaxConns <= 0 {
		c.MaxConns = max(DefaultMaxConns, int32(c.Committers)+6)
	}
	if c.MaxConns < int32(c.Committers)+2 {
		return c, fmt.Errorf("config: MaxConns is %d, it must be at least Committers+2 (%d): one connection per committer, one for the reader, one for the sweeper", c.MaxConns, c.Committers+2)
	}
	if c.SecondReadRound > 0 && c.MaxConns < int32(c.Committers)+3 {
		return c, fmt.Errorf("config: MaxConns is %d, with SecondReadRound it must be at least Committers+3 (%d): one connection per committer, two for the reader, one for the sweeper", c.MaxConns, c.Committers+3)
	}
	if c.StatementTimeout <= 0 {
		c.StatementTimeout = DefaultStatementTimeout
	}
	if c.QueueSize <= 0 {
		c.QueueSize = DefaultQueueSize
	}
	if c.MaxBatch <= 0 {
		c.MaxBatch = DefaultMaxBatch
	}
	if c.SweepInterval == 0 {
		c.SweepInterval = DefaultSweepInterval
	}
	if c.SearchScan <= 0 {
		c.SearchScan = DefaultSearchScan
	}
	if c.AnalysisTimeout <= 0 {
		c.AnalysisTimeout = DefaultAnalysisTimeout
	}
	if c.SweepBatch <= 0 {
		c.SweepBatch = DefaultSweepBatch
	}
	if c.ProjectQueueShare == 0 {
		c.ProjectQueueShare = DefaultProjectQueueShare
	}
	if c.ProjectQueueShare < 0 || c.ProjectQueueShare > 1 {
		return c, fmt.Errorf("config: ProjectQueueShare is %g, want a share in (0, 1]", c.ProjectQueueShare)
	}
	if c.LeaseLifetime <= 0 {
		c.LeaseLifetime = DefaultLeaseLifetime
	}
	if c.ObserveBatch == nil {
		c.ObserveBatch = func(int) {}
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	return c, nil
}
