// Package pebble is the embedded store.Store backend on Pebble, an engine
// built around a write-ahead log: one directory, served by one daemon. It
// lets kvsidecar run with a single command on a laptop or on a node that has
// no PostgreSQL, with the same semantics as the shared backend.
//
// # Writes: group commit on the log
//
// Every write call becomes a request on a bounded queue (store/internal/batch,
// fair per project) and waits for its answer. One committer
// goroutine takes what is queued, applies the requests in queue order into
// one pebble.Batch and applies it to Pebble with a log sync requested
// (DB.ApplyNoSyncWait): one append to the log and one fdatasync for the
// lot. Once the sync has returned, each request is answered; by the
// committer itself, or, with Config.PipelineDepth above 1, by a completer
// goroutine while the committer builds the next batch (pipeline.go).
//
// The committer is the only writer, so it keeps each project's usage, quota
// override and version counter in memory (loaded at Open), and what a set
// needs of the record it replaces comes from the batch's own map of keys it
// wrote, from the committer's map of recently written keys (recent.go), or
// from a plain Get: no indexed batch, no read of a counter per write. The in-memory
// state of a batch's projects is replaced only once the batch has
// committed, so a batch that fails or panics leaves no trace, and its
// requests are retried one per batch.
//
// # Reads see only what was synced
//
// Pebble publishes a batch's writes to readers before its log sync returns:
// commitPipeline.Commit applies the batch to the memtable, publishes its
// sequence number (publish), and only then waits for the sync; its doc says
// "waiting for the WAL sync after ratcheting the visible sequence number
// allows another goroutine to read committed data before the WAL has
// synced. [...] Application code needs to protect against this". So reads
// never use the DB directly: they use a snapshot the committer takes right
// after each batch's apply, which becomes the read view once the batch's
// log sync has returned and before its callers are answered (view.go,
// pipeline.go). A read sees a write once it was answered, and never a
// write a crash could still lose.
//
// A log sync that fails stops the store's writes: that batch, every batch
// applied after it and every later write fail with store.ErrUnavailable,
// and Ping reports it, while reads go on on the last synced snapshot.
//
// # Layout
//
// One Pebble directory. Keys start with a kind byte; keys of a project then
// hold the length of its name (one byte: names are at most 255 bytes) and
// the name, so no project's range contains another's:
//
//	0x01 "format"                 uint64 layout version (1)
//	0x01 "default_quota"          int64 bytes; absent means store.DefaultQuota
//	0x02 name                     a project's state: int64 bytes ++ int64 entries
//	                              of every stored entry, expired or not ++
//	                              uint64 last version given ++ int64 quota
//	                              override (0: none)
//	0x03 len name key             uint64 expiry (unix ms, 0 = never) ++ uint64
//	                              version ++ value
//	0x04 len name expiry key      empty: one row per entry that expires
//
// Integers are big-endian, so a project's expiry index sorts by time and its
// expired entries are a prefix of it. A project exists (Projects lists it)
// once a write stored its state. Clear is two range deletions.
//
// # A full disk
//
// Pebble cannot go on after a failed log write (it stops the process), so
// the committer never lets a commit run out of space: before each batch it
// reads the filesystem's free space and refuses writes that add data,
// with store.ErrUnavailable ("disk is full"), while it is below what a
// memtable flush needs plus twice the batch. Writes that only remove data
// (Delete, DeleteMany, Clear, Sweep) go on; when the free space is short for
// them too, the committer releases the disk reserve (Config.DiskReserve,
// a file of allocated space next to the directory) and they run in its
// room. Deleted data leaves the disk when Pebble compacts it, not at once.
package pebble

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/cockroachdb/pebble/v2/vfs"
	"go.uber.org/zap"

	"github.com/kvsidecar/kvsidecar/store"
	"github.com/kvsidecar/kvsidecar/store/internal/batch"
)

// Defaults of Config.
const (
	// DefaultSweepInterval is how often the sweeper looks for expired entries.
	// Expired entries are invisible and cost no quota from the moment they
	// expire; sweeping only reclaims space, so it need not be prompt.
	DefaultSweepInterval = 30 * time.Second
	// DefaultSweepBatch bounds the entries one Sweep deletes, in all its
	// requests in the write queue (each visits at most sweepVisits
	// projects): deleting 1000 entries costs about one fsync, so writes
	// queued behind them wait little longer than they would.
	DefaultSweepBatch = 1000
	// DefaultSearchScan bounds the keys one read of the admin's scans looks
	// at: a scan of a large project is many short reads, each on the
	// snapshot current when it starts.
	DefaultSearchScan = 100_000
	// DefaultLockTimeout is how long Open waits for the directory lock held
	// by another process: long enough to ride out a daemon that is just
	// exiting, short enough that a second daemon fails at start.
	DefaultLockTimeout = time.Second
	// DefaultProjectQueueShare is the share of the write queue one project
	// may hold: a quarter.
	DefaultProjectQueueShare = 0.25
	// DefaultDiskReserve is the space kept in reserve next to the directory
	// for deletes on a full disk: a delete is a small log record, but the
	// memtable flush and the compactions that drop deleted data write new
	// files before they remove old ones. 16 MiB covers a few flushes of
	// tombstones on a disk where it is nothing.
	DefaultDiskReserve = 16 << 20
)

// Memory: Pebble's memtables and block cache are most of what the store
// holds. They are sized so the daemon stays within its RSS targets (30 MiB
// idle, 150 MiB under load) while a memtable still holds tens of thousands
// of 100-byte sets between flushes.
const (
	// memTableSize is one memtable's arena. Pebble allocates the arena when
	// it makes the memtable, but its pages cost memory only once written.
	memTableSize = 8 << 20
	// memTableStopWrites is how many memtables (filling and flushing) may
	// be queued before writes stall: the most memtable memory is this many
	// times memTableSize.
	memTableStopWrites = 4
	// cacheSize is the block cache for reads of flushed data.
	cacheSize = 32 << 20
	// diskHeadroom is the free space the committer keeps for Pebble's own
	// writes (a memtable flush writes about a memtable's worth of table
	// before the log it replaces is removed), beyond twice a batch's data.
	diskHeadroom = 2*memTableSize + 1<<20
)

// Config configures Open.
type Config struct {
	// Path is the Pebble directory. It is created (mode 0700) if missing.
	// Required.
	Path string
	// Limits are the key and value size limits; zero fields take the
	// store defaults (store.DefaultMaxKeyBytes, store.DefaultMaxValueBytes).
	Limits store.Limits
	// DefaultQuota is the quota in bytes of projects without an override.
	// When > 0 it is stored at Open, replacing what SetDefaultQuota stored
	// before; when 0 the stored default applies, or store.DefaultQuota if
	// none was stored.
	DefaultQuota int64
	// Now is the clock used for TTLs. Default: time.Now.
	Now func() time.Time
	// SweepInterval is how often the background sweeper deletes expired
	// entries. 0 means DefaultSweepInterval; < 0 disables the sweeper (Sweep
	// can still be called).
	SweepInterval time.Duration
	// SweepBatch is the most entries one Sweep deletes. 0 means
	// DefaultSweepBatch.
	SweepBatch int
	// LockTimeout is how long Open waits for another process to release
	// the directory. 0 means DefaultLockTimeout.
	LockTimeout time.Duration
	// SearchScan is the most keys (or expiry index rows) one read of
	// SearchKeys, PrefixUsage, LargestKeys or ExpiringBytes looks at
	// (SearchKeys then returns a page cut short). 0 means DefaultSearchScan.
	SearchScan int
	// ProjectQueueShare is the share of the write queue (of its 1024
	// calls) that the waiting writes of one project may take, in (0, 1].
	// 0 means DefaultProjectQueueShare.
	ProjectQueueShare float64
	// DiskReserve is the space, in bytes, kept allocated in a file next to
	// the directory (Path + ".reserve") so that Delete, DeleteMany, Clear
	// and the sweeper keep working when the disk is full (see the package
	// doc). 0 means DefaultDiskReserve; < 0 keeps no reserve.
	DiskReserve int64
	// ObserveBatch, if set, is called after each batch is committed with
	// the number of write requests it holds, before they are answered:
	// once its log sync has returned, or, with a PipelineDepth above 1,
	// once it is applied and while its sync may still run. It runs on the
	// committer goroutine, so it must be fast (a histogram observation).
	ObserveBatch func(n int)
	// PipelineDepth is how many batches applied to Pebble may wait for
	// their log sync at once, in [1, 4]. 1 (the default; 0 means 1): the
	// committer waits for each batch's sync before it answers it and
	// draws the next. 2 or more: a completer goroutine waits for the sync
	// and answers, while the committer builds and applies the next batch
	// (pipeline.go); every answer still follows its batch's sync.
	PipelineDepth int
	// Logger receives the store's own events and Pebble's (at warn and
	// above; Pebble's info lines at debug). Default: zap.NewNop().
	Logger *zap.Logger

	// fs, if set, is the filesystem Pebble uses: for the test that holds
	// its log syncs (synced_test.go).
	fs vfs.FS
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
	if c.PipelineDepth == 0 {
		c.PipelineDepth = 1
	}
	if c.ObserveBatch == nil {
		c.ObserveBatch = func(int) {}
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	if c.fs == nil {
		c.fs = vfs.Default
	}
	return c
}

func (c Config) validate() error {
	if c.Path == "" {
		return errors.New("config: Path is empty")
	}
	if c.DefaultQuota < 0 {
		return fmt.Errorf("config: DefaultQuota is negative (%d)", c.DefaultQuota)
	}
	if c.PipelineDepth < 1 || c.PipelineDepth > maxPipelineDepth {
		return fmt.Errorf("config: PipelineDepth is %d, want 1 to %d", c.PipelineDepth, maxPipelineDepth)
	}
	if c.ProjectQueueShare < 0 || c.ProjectQueueShare > 1 {
		return fmt.Errorf("config: ProjectQueueShare is %g, want a share in (0, 1]", c.ProjectQueueShare)
	}
	return nil
}

// Store is the Pebble backend. It is safe for concurrent use.
type Store struct {
	db     *pebble.DB
	cfg    Config
	limits store.Limits

	// mu guards closed and, held for reading by every read while it runs,
	// keeps Close from closing the DB under a reader.
	mu     sync.RWMutex
	closed bool

	// views is the snapshot reads use (view.go).
	views views

	// queue is the write queue; its goroutine is the committer. It refuses
	// writes once closed, so no write reaches the DB after Close.
	queue *batch.Queue[request, result]
	// pipe, with a PipelineDepth of 2 or more, takes each applied batch
	// from the committer to the completer goroutine, which answers it once
	// it is synced (pipeline.go); nil otherwise.
	pipe *pipeline
	// stopped is the failed log sync that stopped the writes (pipeline.go).
	stopMu  sync.Mutex
	stopped error

	// The committer's own state: the projects' usage, quota and version,
	// and the default quota, as of the last committed batch. Only the
	// committer (and Open, before it starts) touches them.
	projects     map[string]projectState
	recent       recent   // recent.go
	due          dueIndex // sweep.go
	defaultQuota int64    // 0: store.DefaultQuota
	reserve      reserve

	stopSweeper context.CancelFunc
	sweeperDone chan struct{}
}

var (
	_ store.Store = (*Store)(nil)
	_ store.Admin = (*Store)(nil)
)

// Open opens (or creates) the Pebble directory, loads the projects' state
// and starts the committer and the sweeper, which run until Close. ctx
// bounds the opening only. Opening a directory that another process holds
// fails after Config.LockTimeout.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	db, err := openDB(ctx, cfg)
	if err != nil {
		return nil, err
	}
	s := &Store{
		db:          db,
		cfg:         cfg,
		limits:      cfg.Limits,
		reserve:     reserve{Path: filepath.Clean(cfg.Path) + ".reserve", Size: max(cfg.DiskReserve, 0)},
		sweeperDone: make(chan struct{}),
		recent:      make(recent),
	}
	if err := s.load(cfg.DefaultQuota); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open %s: %w", cfg.Path, err)
	}
	s.views.init(db)
	if cfg.DiskReserve < 0 {
		_ = os.Remove(s.reserve.Path) // a reserve left by an earlier configuration
	} else if err := s.reserve.Take(time.Now()); err != nil {
		// Not fatal: the store serves, and the committer tries again.
		cfg.Logger.Warn("pebble: no disk reserve for deletes on a full disk", zap.Error(err))
	}
	if cfg.PipelineDepth > 1 {
		s.pipe = newPipeline(cfg.PipelineDepth)
		go s.complete()
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

// lockRetry is how often Open tries again for a directory another process
// holds.
const lockRetry = 20 * time.Millisecond

// openDB opens the Pebble directory with the store's options, waiting up to
// Config.LockTimeout for another process's lock.
func openDB(ctx context.Context, cfg Config) (*pebble.DB, error) {
	if err := cfg.fs.MkdirAll(cfg.Path, 0o700); err != nil {
		return nil, fmt.Errorf("open %s: %w", cfg.Path, err)
	}
	deadline := time.Now().Add(cfg.LockTimeout)
	for {
		lock, err := pebble.LockDirectory(cfg.Path, cfg.fs)
		if err == nil {
			opts := pebbleOptions(cfg, lock)
			db, err := pebble.Open(cfg.Path, opts)
			// The DB takes its own reference to the cache; the cache goes
			// with the DB.
			opts.Cache.Unref()
			if err != nil {
				_ = lock.Close()
				return nil, fmt.Errorf("open %s: %w", cfg.Path, err)
			}
			// The DB holds its own reference to the lock; ours goes.
			_ = lock.Close()
			return db, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("open %s: the directory is locked by another process (waited %s): %w", cfg.Path, cfg.LockTimeout, err)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(lockRetry):
		}
	}
}

// pebbleOptions are the Pebble options of the store. The caller must
// Unref their Cache once the DB is open.
func pebbleOptions(cfg Config, lock *pebble.Lock) *pebble.Options {
	log := pebbleLogger{cfg.Logger.Named("pebble").Sugar()}
	opts := &pebble.Options{
		FS:                          cfg.fs,
		Lock:                        lock,
		Cache:                       pebble.NewCache(cacheSize),
		MemTableSize:                memTableSize,
		MemTableStopWritesThreshold: memTableStopWrites,
		FormatMajorVersion:          pebble.FormatNewest,
		Logger:                      log,
		EventListener:               eventListener(cfg.Logger.Named("pebble")),
	}
	// A Bloom filter in every table (the deeper levels take L0's): a Get
	// of a key looks only into the tables that may hold it, instead of
	// searching the index of every level-0 table that overlaps it. 10 bits
	// a key is Pebble's usual choice (about 1% false positives).
	opts.Levels[0].FilterPolicy = bloom.FilterPolicy(bloomBitsPerKey)
	return opts
}

// bloomBitsPerKey sizes the tables' Bloom filters.
const bloomBitsPerKey = 10

// Close stops the sweeper, commits every write already queued, stops the
// committer and closes the DB. Calls after Close, Close included, fail with
// store.ErrClosed.
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
	if s.pipe != nil {
		s.pipe.close() // every batch applied is synced and answered
	}
	s.views.close()
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close %s: %w", s.cfg.Path, err)
	}
	return nil
}

// Ping reports whether the store is open, takes writes (see the package
// doc on a failed log sync) and has its format readable.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.writesStopped(); err != nil {
		return err
	}
	return s.read(ctx, func(r reader, _ int64) error {
		v, ok, err := r.get(metaKey(metaFormat))
		if err != nil {
			return err
		}
		if !ok || len(v) != 8 {
			return fmt.Errorf("%w: the store has no format record", store.ErrUnavailable)
		}
		return nil
	})
}

// nowMs is the store's clock in unix milliseconds, the unit of stored
// expiries.
func (s *Store) nowMs() int64 {
	return s.cfg.Now().UnixMilli()
}
