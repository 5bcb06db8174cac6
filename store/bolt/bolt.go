// Package bolt is the embedded store.Store backend: one bbolt file, served by
// one daemon. It lets kvsidecar run with a single command on a laptop or on a
// node that has no PostgreSQL, with the same semantics as the shared backend.
//
// # Writes: group commit
//
// Every write call (Set, SetMany, Delete, DeleteMany, Clear, Incr, SetQuota,
// SetDefaultQuota, Sweep) becomes a request on a bounded queue and waits for
// its answer. One committer goroutine takes the first queued request, then
// whatever else is queued at that moment (it never waits for more), applies
// them in queue order in one bbolt read-write transaction — one fsync for the
// lot — and answers each with its own result. At low load a write therefore
// commits alone and at once; under load, callers share fsyncs. This is
// bbolt's DB.Batch without its linger timer. Durability is bbolt's default: a
// transaction is fsynced before any of its writes is answered.
//
// The queue has one lane per project, and the committer takes one request
// of each waiting project in turn (store/internal/batch), so a project that
// floods it delays another's lone write by about one batch; one project may
// hold at most Config.ProjectQueueShare of the queue.
//
// A write that fits its quota only once its project's expired entries are
// deleted deletes at most Config.SweepBatch of them per transaction; when it
// needs more it is requeued, with its project's later writes, and the purge
// goes on in the next transaction, between other projects' writes.
//
// bbolt writes new pages even to delete, so on a full disk every write
// fails. Config.DiskReserve keeps space allocated in a file next to the
// store's; a write that only removes data and fails for want of space gets
// it (reserve.go).
//
// A write's context applies while it waits to enter the queue (which is
// bounded, so a slow disk pushes back on callers). Once queued, the write is
// applied and the call waits for its real outcome, so a write whose context
// expires after that point may still commit — and reports that it did.
//
// Each request is decided (arguments, quota, integer parsing) before it
// mutates anything, so a refused request leaves no trace and its neighbours in
// the batch commit normally. If the transaction itself fails, its requests
// are retried one per transaction, so only the culprit fails. If it panics
// (a bug), bbolt rolls it back and its requests fail with an internal error
// while the committer goes on; the queue is store/internal/batch's.
//
// Reads run in bbolt read-only transactions, concurrently with each other and
// with the committer. A write is answered only after its commit, so a read
// that starts after a write returned sees it.
//
// Store implements store.Async (async.go): Do runs the reads of a slice of
// single-key ops at once, in one read-only transaction for all of them,
// calling each op's Done inside it, and hands the writes to the write queue
// in one submission, each answered by the committer after its commit. A
// write of Do that finds the queue full, or its project's share taken,
// fails at once with store.ErrBusy instead of waiting; an op whose Deadline
// has passed when it is taken up fails with store.ErrUnavailable, not
// applied.
//
// # File layout
//
// Everything is keyed by project first:
//
//	meta                       bucket
//	  "format"                 uint64 layout version, 2 (Open upgrades a file of 1)
//	  "default_quota"          int64 bytes; absent means store.DefaultQuota
//	projects                   bucket, one nested bucket per project name:
//	  <project>
//	    "usage"                int64 bytes ++ int64 entries of every stored entry,
//	                           expired or not, updated in the transaction of each write
//	    "quota"                int64 bytes: the project's override; absent means the default
//	    "version"              uint64: the last version given to a write of the project
//	    data                   bucket: key -> uint64 expiry (unix ms, 0 = never) ++
//	                           uint64 version ++ value
//	    exp                    bucket: uint64 expiry (unix ms) ++ key -> empty;
//	                           one row per entry that expires, in expiry order
//
// Integers are big-endian, so the expiry index sorts by time and the expired
// entries of a project are a prefix of its exp bucket: finding them never
// scans live entries. An entry is expired when its expiry is at or before
// now; reads skip expired entries, so they are invisible at once, and the
// sweeper deletes them later in bounded batches.
//
// Versions come from the project's counter, advanced once per write call in
// that call's transaction, so they are strictly increasing per project —
// hence per key, across deletes, Clear (which keeps the project's bucket)
// and restarts. Every item of one SetMany shares its call's version.
//
// The stored usage counts expired entries until they are deleted; Usage and
// the quota check subtract them (the quota check by deleting the project's
// expired entries before it refuses), so an entry that has expired never
// costs its project anything.
package bolt

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
	"go.uber.org/zap"

	"github.com/kvsidecar/kvsidecar/store"
	"github.com/kvsidecar/kvsidecar/store/internal/batch"
)

// Defaults of Config.
const (
	// DefaultSweepInterval is how often the sweeper looks for expired entries.
	// Expired entries are invisible and cost no quota from the moment they
	// expire; sweeping only reclaims file space, so it need not be prompt.
	DefaultSweepInterval = 30 * time.Second
	// DefaultSweepBatch bounds the entries one Sweep deletes. A sweep is one
	// request in the write queue: deleting 1000 entries takes about a
	// millisecond, the order of one fsync, so writes queued behind a sweep
	// wait little longer than they would anyway.
	DefaultSweepBatch = 1000
	// DefaultSearchScan bounds the keys one read transaction of the admin's
	// scans (SearchKeys, PrefixUsage, LargestKeys, ExpiringBytes) looks at: this many take
	// tens of milliseconds, so scanning a large project is many short read
	// transactions instead of one long one, which would delay a writer that
	// must grow the file.
	DefaultSearchScan = 100_000
	// DefaultLockTimeout is how long Open waits for the file lock held by
	// another process before it fails: long enough to ride out a daemon that
	// is just exiting, short enough that a second daemon on the same file
	// fails at start instead of hanging.
	DefaultLockTimeout = time.Second
	// DefaultProjectQueueShare is the share of the write queue one project
	// may hold: a quarter, so that at least four projects flooding at once
	// are needed to fill it, and a project alone still gets batches of a
	// few hundred writes.
	DefaultProjectQueueShare = 0.25
	// DefaultDiskReserve is the space kept in reserve next to the file for
	// deletes on a full disk. A Delete needs a few pages; a Clear of a
	// project of a million entries rewrites a freelist of about 8 bytes a
	// freed page, a few MiB: 16 MiB covers that on a disk where it is
	// nothing.
	DefaultDiskReserve = 16 << 20
)

// Config configures Open.
type Config struct {
	// Path is the bbolt file. It is created (mode 0600) if missing. Required.
	Path string
	// Limits are the key and value size limits; zero fields take the
	// store defaults (store.DefaultMaxKeyBytes, store.DefaultMaxValueBytes).
	Limits store.Limits
	// DefaultQuota is the quota in bytes of projects without an override.
	// When > 0 it is written to the file at Open, replacing what
	// SetDefaultQuota stored before; when 0 the file's stored default
	// applies, or store.DefaultQuota if it has none.
	DefaultQuota int64
	// Now is the clock used for TTLs. Default: time.Now.
	Now func() time.Time
	// SweepInterval is how often the background sweeper deletes expired
	// entries. 0 means DefaultSweepInterval; < 0 disables the sweeper (Sweep
	// can still be called).
	SweepInterval time.Duration
	// SweepBatch is the most entries one Sweep deletes. 0 means
	// DefaultSweepBatch. It is bounded because a sweep runs in the write
	// queue: a huge one would delay every write queued behind it.
	SweepBatch int
	// LockTimeout is how long Open waits for another process to release
	// the file. 0 means DefaultLockTimeout.
	LockTimeout time.Duration
	// SearchScan is the most keys (or expiry index rows) one read
	// transaction of SearchKeys, PrefixUsage, LargestKeys or ExpiringBytes
	// looks at (SearchKeys then returns a page cut short). 0 means
	// DefaultSearchScan.
	SearchScan int
	// ProjectQueueShare is the share of the write queue (of its 1024
	// calls) that the waiting writes of one project may take, in (0, 1].
	// The committer serves projects round-robin in any case; this bounds
	// the memory and the slots a flooding project holds, and its writes
	// beyond it wait and fail with store.ErrBusy when their context ends,
	// while other projects' writes still enter. 0 means
	// DefaultProjectQueueShare.
	ProjectQueueShare float64
	// DiskReserve is the space, in bytes, kept allocated in a file next to
	// the store's (Path + ".reserve") so that Delete, DeleteMany, Clear and
	// the sweeper keep working when the disk is full: bbolt needs new pages
	// even to delete. When a write that frees space fails for want of it,
	// the reserve is released and the write runs in its room; while it is
	// released, writes that add data fail with store.ErrUnavailable ("disk
	// full") unless the file's free pages leave room, and the committer
	// takes the reserve back once the disk has space again. 0 means
	// DefaultDiskReserve; < 0 keeps no reserve.
	DiskReserve int64
	// ObserveBatch, if set, is called after each committed transaction with
	// the number of write requests it committed. It runs on the committer
	// goroutine, so it must be fast (a histogram observation).
	ObserveBatch func(n int)
	// Logger receives the store's own events (sweeper failures, batches
	// retried after a failed commit). Default: zap.NewNop().
	Logger *zap.Logger

	// tune, if set, changes the bbolt options Open uses: for the
	// benchmarks that compare them (export_test.go).
	tune func(*bbolt.Options)
}

func (c Config) withDefaults() Config {
	c.Limits = c.Limits.WithDefaults()
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.SweepInterval == 0 {
		c.SweepInterval = DefaultSweepInterval
	}
	if c.SweepBatch <= 0 {
		c.SweepBatch = DefaultSweepBatch
	}
	if c.LockTimeout <= 0 {
		c.LockTimeout = DefaultLockTimeout
	}
	if c.SearchScan <= 0 {
		c.SearchScan = DefaultSearchScan
	}
	if c.ProjectQueueShare == 0 {
		c.ProjectQueueShare = DefaultProjectQueueShare
	}
	if c.DiskReserve == 0 {
		c.DiskReserve = DefaultDiskReserve
	}
	if c.ObserveBatch == nil {
		c.ObserveBatch = func(int) {}
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	return c
}

func (c Config) validate() error {
	if c.Path == "" {
		return errors.New("config: Path is empty")
	}
	// The expiry index key is 8 bytes of expiry followed by the key; a
	// record is recordHeader bytes followed by the value.
	if c.Limits.MaxKeyBytes > bbolt.MaxKeySize-8 {
		return fmt.Errorf("config: Limits.MaxKeyBytes is %d, bbolt allows at most %d", c.Limits.MaxKeyBytes, bbolt.MaxKeySize-8)
	}
	if c.Limits.MaxValueBytes > bbolt.MaxValueSize-recordHeader {
		return fmt.Errorf("config: Limits.MaxValueBytes is %d, bbolt allows at most %d", c.Limits.MaxValueBytes, bbolt.MaxValueSize-recordHeader)
	}
	if c.DefaultQuota < 0 {
		return fmt.Errorf("config: DefaultQuota is negative (%d)", c.DefaultQuota)
	}
	if c.ProjectQueueShare < 0 || c.ProjectQueueShare > 1 {
		return fmt.Errorf("config: ProjectQueueShare is %g, want a share in (0, 1]", c.ProjectQueueShare)
	}
	return nil
}

// Store is the bbolt backend. It is safe for concurrent use.
type Store struct {
	db     *bbolt.DB
	cfg    Config
	limits store.Limits

	// mu guards closed and, held for reading by every read while it runs,
	// keeps Close from closing the file under a reader.
	mu     sync.RWMutex
	closed bool

	// queue is the write queue; its goroutine is the committer. It refuses
	// writes once closed, so no write reaches the file after Close.
	queue *batch.Queue[request, result]

	// reserve is the disk reserve (Config.DiskReserve), the committer's.
	reserve reserve

	stopSweeper context.CancelFunc
	sweeperDone chan struct{}
}

var _ store.Store = (*Store)(nil)

// Open opens (or creates) the bbolt file and starts the committer and the
// sweeper, which run until Close. ctx bounds the opening only. Opening a file
// that another process holds fails after Config.LockTimeout.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	opts := &bbolt.Options{Timeout: cfg.LockTimeout}
	if cfg.tune != nil {
		cfg.tune(opts)
	}
	db, err := bbolt.Open(cfg.Path, 0o600, opts)
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("open %s: the file is locked by another process (waited %s): %w", cfg.Path, cfg.LockTimeout, err)
	}
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", cfg.Path, err)
	}
	if err := db.Update(func(tx *bbolt.Tx) error { return initFile(tx, cfg.DefaultQuota) }); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open %s: %w", cfg.Path, err)
	}

	s := &Store{
		db:          db,
		cfg:         cfg,
		limits:      cfg.Limits,
		reserve:     reserve{Path: cfg.Path + ".reserve", Size: max(cfg.DiskReserve, 0)},
		sweeperDone: make(chan struct{}),
	}
	if cfg.DiskReserve < 0 {
		_ = os.Remove(s.reserve.Path) // a reserve left by an earlier configuration
	} else if err := s.reserve.Take(time.Now()); err != nil {
		// Not fatal: the store serves, and the committer tries again.
		cfg.Logger.Warn("bolt: no disk reserve for deletes on a full disk", zap.Error(err))
	}
	s.queue = s.newQueue()

	sweepCtx, cancel := context.WithCancel(context.Background())
	s.stopSweeper = cancel
	if cfg.SweepInterval > 0 {
		go s.sweepLoop(sweepCtx, cfg.SweepInterval)
	} else {
		close(s.sweeperDone)
	}
	return s, nil
}

// Close stops the sweeper, commits every write already queued, stops the
// committer and closes the file. Calls after Close, Close included, fail
// with store.ErrClosed.
func (s *Store) Close() error {
	s.stopSweeper()
	<-s.sweeperDone

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return store.ErrClosed
	}
	s.closed = true
	s.mu.Unlock()

	s.queue.Close() // commits what is queued; later writes fail with ErrClosed
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close %s: %w", s.cfg.Path, err)
	}
	return nil
}

// Ping reports whether the store is open and its file readable.
func (s *Store) Ping(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return store.ErrClosed
	}
	return s.db.View(func(tx *bbolt.Tx) error {
		if tx.Bucket(bucketMeta) == nil {
			return fmt.Errorf("%w: the file has no meta bucket", store.ErrUnavailable)
		}
		return nil
	})
}

// nowMs is the store's clock in unix milliseconds, the unit of stored
// expiries.
func (s *Store) nowMs() int64 {
	return s.cfg.Now().UnixMilli()
}
