// Package postgres is the store.Store backend on PostgreSQL: the shared,
// durable store behind every daemon of a cluster.
//
// # Writes: group commit
//
// Set, SetMany, Delete, DeleteMany, Clear and Incr go into bounded queues,
// one per committer goroutine; a project maps to one committer, so its
// writes stay in order (with Config.Leases, the Sets of a project under a
// quota lease go to whichever committer is free: lease.go). A committer takes everything queued at that
// moment (there is no linger timer: a lone write on an idle daemon commits at
// once) and applies it in one transaction:
//
//  1. lock the usage row of each project in the batch, in sorted order;
//  2. read the stored rows of the keys the batch touches;
//  3. decide every call in Go, in queue order, against that state (quota,
//     Incr's arithmetic, what Delete finds), so that each call gets its own
//     result and several calls on one key see each other's effects;
//  4. write the final state of each touched key with one set-based statement
//     per project and kind (unnest arrays), and the new usage;
//  5. commit, and only then answer the callers.
//
// Steps 1–2 are one round trip and 4–5 another (pgx pipelines them). A Clear
// splits the batch: what precedes it is written before it runs. A batch
// whose transaction fails on something other than the connection is retried
// one call at a time, so one bad call never fails its neighbours. The queues
// and their drain are store/internal/batch's; a panic while a batch is
// applied fails that batch's calls with an internal error, and the committer
// goes on. The transaction of the general path is modelled in txn.go, the
// one-round-trip path below in fast.go, and commit.go chooses between them.
//
// Each queue has one lane per project and its goroutine takes one call of
// each waiting project in turn (store/internal/batch), so a project that
// floods a committer delays another's lone write by about one batch; one
// project may hold at most Config.ProjectQueueShare of a queue. A write
// that fits its quota only once its project's expired rows are deleted
// deletes at most Config.SweepBatch of them per transaction, and is
// requeued (with its project's later calls) while it needs more.
//
// A call that meets a connection PostgreSQL has ended runs once more, on a
// checked connection, when that cannot apply anything twice (retry.go).
//
// The common case takes a shorter path. When a batch holds only Sets and
// SetManys, and a project's usage leaves room for all of its items even if
// none replaced an existing entry, no call can be refused and nothing needs
// deciding in Go: one statement per project locks its usage row by updating
// it, writes each key's last value and adjusts the usage by what the
// replaced rows used, and the batch commits in a single round trip; a lone
// Set is one statement, as a naive INSERT would be. The calls of a project
// close to its quota, or whose usage row another daemon wrote while the
// statement waited for its lock (the sizes it read would be stale), then
// take the general path.
//
// # Quotas
//
// A project's usage row holds the bytes and entries of its stored rows. It
// is updated in the same transaction as the rows, under its lock, by every
// daemon: usage is exact and never exceeds the quota, whatever the number
// of daemons. With Config.Leases, a committer whose writes of a project
// come back to back may instead write its Sets under a quota lease, a
// reservation taken from the usage row, without that row's lock, so that
// the project's transactions overlap; the usage is then the usage row's
// plus its leases' (lease.go). Stored usage includes expired rows not yet swept; a write
// that would exceed the quota first deletes the project's expired rows, and
// Usage subtracts them, so an expired entry never costs anything. The
// default quota and per-project overrides live in the database.
//
// # Reads: coalescing
//
// Get, Has, GetMany and HasMany go into one queue. A reader goroutine sends
// everything queued as one pipelined round trip (per project, one statement
// for the keys whose values are wanted and one for those only tested, each
// looking its keys up through the primary key); while it waits, newcomers
// queue for the next.
//
// # Without a goroutine per call: Do
//
// Store implements store.Async (async.go): Do hands the reads of a slice of
// single-key ops to the reader's queue and the writes to their committers,
// one submission per queue, and each op's Done is called from the reader or
// the committer. The ops take the same batches, the same round trips and the
// same retries as the waiting methods; the difference is what they cost the
// caller: no goroutine parked per op, no context, no channel. An op that
// finds its queue full, or its project's share of it taken, fails at once
// with store.ErrBusy instead of waiting, and an op whose Deadline has passed
// when its batch is drawn is not applied and fails with
// store.ErrUnavailable.
//
// # Time
//
// Expiries are timestamptz computed by the database's clock, unless
// Config.Now injects one (tests). Expired rows are filtered out of every
// read at once; Sweep deletes them in bounded batches.
//
// # Distribution
//
// Every statement but one names a single project by equality on the leading
// primary-key column, so the tables can be distributed by project (Citus).
// The exception is the sweeper's search for projects with expired entries,
// a read of the small kv_usage table. A write transaction spans the projects
// of its batch; on a distributed database that is a distributed transaction,
// whose cost has not been measured here.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"

	"github.com/kvsidecar/kvsidecar/store"
	"github.com/kvsidecar/kvsidecar/store/internal/batch"
)

// Store is the PostgreSQL backend. It is safe for concurrent use.
type Store struct {
	cfg  Config
	pool *pgxpool.Pool
	log  *zap.Logger

	// mu guards closed, which the calls that do not queue check.
	mu     sync.RWMutex
	closed bool

	// The queues' goroutines are the committers and the reader. Each queue
	// refuses calls once closed, so nothing reaches the pool after Close.
	writeQs []*batch.Queue[writeReq, writeResult] // one per committer
	readQ   *batch.Queue[readReq, readResult]
	// readConns are the reader's connections, kept between rounds, one
	// per read round in flight (read.go).
	readConns [2]readConn
	// stalled is set while the database fails the ops of Do as
	// unavailable (down, frozen, timing out): Do then hands every op to
	// the queues rather than wait for the database on its caller's
	// goroutine (async.go), until an op succeeds again.
	stalled atomic.Bool

	// known holds projects whose usage row is known to exist. Rows are
	// never deleted, so an entry stays true.
	known sync.Map
	// lockFirst holds, per project whose fast path recently found another
	// writer ahead, how many more batches lock its usage row first (fast.go).
	lockFirst sync.Map
	// holders are the committers' sides of their quota leases, one per
	// committer; leased counts, per project, the committers holding a
	// lease on it (lease.go).
	holders []*holder
	leased  sync.Map
	grants  atomic.Int64 // leases granted, for tests

	stopSweeper context.CancelFunc
	sweeperDone chan struct{}
}

var _ store.Store = (*Store)(nil)

// Open connects to PostgreSQL, creates or migrates the schema, and starts the
// committers, the reader and the sweeper, which run until Close. ctx bounds
// the opening only. Several daemons may Open the same database at once.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	pcfg, err := pgxpool.ParseConfig(cfg.DSN)
	if err != nil {
		return nil, fmt.Errorf("config: DSN: %w", err)
	}
	pcfg.MaxConns = cfg.MaxConns
	cc := pcfg.ConnConfig
	cc.RuntimeParams["statement_timeout"] = strconv.FormatInt(cfg.StatementTimeout.Milliseconds(), 10)
	cc.RuntimeParams["idle_in_transaction_session_timeout"] = strconv.FormatInt(2*cfg.StatementTimeout.Milliseconds(), 10)
	// Every statement looks rows up by project and key (or key range) on
	// the primary key. A custom plan made from the statistics of a young
	// table (say, "this project has 3 rows") may instead fetch all of a
	// project's rows by project alone and filter them by key, which turns
	// a batch into a scan as the project grows; the generic plans use the
	// whole key, and save planning time on every execution as well.
	cc.RuntimeParams["plan_cache_mode"] = "force_generic_plan"
	if cc.RuntimeParams["application_name"] == "" {
		cc.RuntimeParams["application_name"] = "kvsidecar"
	}
	if cc.AfterNetConnect == nil {
		cc.AfterNetConnect = wrapConn
	}
	if cc.ConnectTimeout == 0 {
		cc.ConnectTimeout = cfg.StatementTimeout
	}
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("open postgres: %w", err)
	}
	if err := initSchema(ctx, pool, cfg.DefaultQuota); err != nil {
		pool.Close()
		return nil, fmt.Errorf("open postgres: %w", dbError(err))
	}

	holders, err := newHolders(cfg.Committers)
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("open postgres: %w", err)
	}
	s := &Store{
		cfg:         cfg,
		pool:        pool,
		log:         cfg.Logger,
		writeQs:     make([]*batch.Queue[writeReq, writeResult], cfg.Committers),
		holders:     holders,
		sweeperDone: make(chan struct{}),
	}
	// Each committer's queue gets its share of QueueSize (at least one
	// full batch), so a hot project cannot take the slots of the others.
	perQueue := max(cfg.QueueSize/cfg.Committers, 1)
	for i := range s.writeQs {
		s.writeQs[i] = s.newWriteQueue(holders[i], perQueue)
	}
	s.readQ = s.newReadQueue()

	sweepCtx, stop := context.WithCancel(context.Background())
	s.stopSweeper = stop
	if cfg.SweepInterval > 0 {
		go s.sweepLoop(sweepCtx)
	} else {
		close(s.sweeperDone)
	}
	return s, nil
}

// initSchema migrates the schema and stores the default quota.
func initSchema(ctx context.Context, pool *pgxpool.Pool, defaultQuota int64) error {
	if err := migrate(ctx, pool); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	if defaultQuota > 0 {
		if _, err := pool.Exec(ctx, sqlSetDefaultQuota, defaultQuota); err != nil {
			return fmt.Errorf("set default quota: %w", err)
		}
		return nil
	}
	if _, err := pool.Exec(ctx, sqlInitDefaultQuota, int64(store.DefaultQuota)); err != nil {
		return fmt.Errorf("set default quota: %w", err)
	}
	return nil
}

// Close stops accepting calls, commits the writes already queued, stops the
// sweeper and closes the pool. Calls after Close fail with store.ErrClosed.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return store.ErrClosed
	}
	s.closed = true
	s.mu.Unlock()

	// All at once, so that every queue refuses new calls from now on; each
	// Close returns once what was queued is answered.
	var queues sync.WaitGroup
	for _, q := range s.writeQs {
		queues.Go(q.Close)
	}
	queues.Go(s.readQ.Close)
	queues.Wait()
	// No read round runs any more: the reader's connections go back.
	for i := range s.readConns {
		s.readConns[i].release()
	}
	// The committers have ended; what they still lease goes back.
	for _, h := range s.holders {
		s.returnAllLeases(h)
	}
	s.stopSweeper()
	<-s.sweeperDone
	s.pool.Close()
	return nil
}

// Ping reports whether the database answers.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.ready(ctx); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.StatementTimeout)
	defer cancel()
	if err := s.pool.Ping(ctx); err != nil {
		return dbError(err)
	}
	return nil
}

// ready fails with ctx's error when it has ended, and with
// store.ErrClosed after Close: the checks of a call that does not queue.
func (s *Store) ready(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.checkOpen()
}

// checkOpen fails with store.ErrClosed after Close.
func (s *Store) checkOpen() error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return store.ErrClosed
	}
	return nil
}

// nowArg is the clock parameter of a statement: nil (the database's clock)
// unless Config.Now is set.
func (s *Store) nowArg() any {
	if s.cfg.Now == nil {
		return nil
	}
	return s.cfg.Now()
}

// checkProject validates a project name. PostgreSQL's text cannot hold NUL,
// so a name with one is refused here rather than by the database.
func checkProject(project string) error {
	if err := store.CheckProject(project); err != nil {
		return err
	}
	if strings.IndexByte(project, 0) >= 0 {
		return fmt.Errorf("%w: project name must not contain NUL", store.ErrBadArgument)
	}
	return nil
}

// partition maps a project to its committer.
func partition(project string, n int) int {
	h := fnv.New32a()
	h.Write([]byte(project))
	return int(h.Sum32() % uint32(n))
}

// dbError turns an error from the database into what callers match: a data
// error (a value the database refused) matches store.ErrBadArgument,
// anything else — the connection, a timeout, the server shutting down —
// store.ErrUnavailable.
func dbError(err error) error {
	if err == nil {
		return nil
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code[:2] {
		case "22", "23": // data exception, integrity constraint violation
			return fmt.Errorf("%w: postgres refused the data: %w", store.ErrBadArgument, err)
		}
	}
	return fmt.Errorf("%w: postgres: %w", store.ErrUnavailable, err)
}

// errorClass says how the committer reacts to a failed transaction.
type errorClass int

const (
	// classUnavailable: the database or the connection failed; every call
	// of the batch fails with ErrUnavailable.
	classUnavailable errorClass = iota
	// classRetryBatch: a conflict with another transaction (deadlock,
	// serialization failure, a usage row deleted behind our back); run the
	// batch again.
	classRetryBatch
	// classRetryAlone: the database refused something in the batch; run
	// each call in a transaction of its own to find which.
	classRetryAlone
)

// errUsageRowMissing means a project's usage row vanished although this
// store had seen it; the batch is retried after recreating it.
var errUsageRowMissing = errors.New("usage row missing")

func classify(err error) errorClass {
	if errors.Is(err, errUsageRowMissing) {
		return classRetryBatch
	}
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return classUnavailable
	}
	switch pgErr.Code[:2] {
	case "40": // transaction rollback: serialization failure, deadlock
		return classRetryBatch
	case "08", "53", "57", "58", "XX":
		// connection, insufficient resources, operator intervention
		// (shutdown, statement timeout), system and internal errors: not
		// the fault of any one call.
		return classUnavailable
	}
	return classRetryAlone
}

// entryExpiry converts a stored expiry to Entry.Expires.
func entryExpiry(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return t.UTC()
}

// rollback ends a failed transaction on conn, if one is still open, so the
// connection can go back to the pool; if that fails, the pool discards the
// connection when it is released.
func rollback(conn *pgx.Conn) {
	if conn.IsClosed() || conn.PgConn().TxStatus() == 'I' {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), rollbackTimeout)
	defer cancel()
	_, _ = conn.Exec(ctx, "rollback")
}

// rollbackTimeout bounds the rollback of a failed transaction: it is one
// round trip on a connection that just answered.
const rollbackTimeout = time.Second
