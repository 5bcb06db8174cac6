package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"
)

// Quota leases (Config.Leases): how transactions of one project overlap.
//
// Every transaction of the exact path updates its project's usage row and
// holds that row's lock until its commit has flushed, so one project's
// transactions run one after another, in every daemon. A committer whose
// batch holds several calls of a project (they queued while its previous
// transaction was in flight), or whose daemon already leases the project,
// takes a lease instead: a slice of the project's remaining quota, reserved
// in the usage row by a short transaction (sqlGrantLease). Its batches of
// Sets then update only its own lease row (sqlLeaseSet), so the
// transactions of several committers — of this daemon and of others —
// commit at once and share their WAL flushes. While a project has leases
// its unconditional Sets go to whichever committer is free
// (committerFor), so that they overlap in this daemon too. A committer
// returns a lease it has not written under for leaseIdle.
//
// Why the quota stays exact: a lease is granted only while the usage row's
// bytes plus every reservation stays within the quota, and a write under a
// lease only while the bytes it added stay within its reservation, checked
// by the statement that writes. Everything else — Delete, Clear, Incr,
// Expire, conditional writes, a Set near the limit, the sweeper, Import and
// quota changes — takes the exact path, which first folds every lease of
// the project into its usage row under the row's lock (sqlFoldLeases),
// waiting for the writes in flight under them, and decides against exact
// usage; a write under a folded lease finds no lease row and writes
// nothing, and its calls go to the exact path as well.
//
// Why versions stay strictly increasing per key: a lease starts at the
// project's counter, above every version given before, and remembers the
// highest version written under it; a batch under it takes versions above
// that and above every stored version of its keys, and a key another
// writer changes between the statement's read and its write fails the
// statement (kv_lease_conflict). A fold raises the counter to the highest
// version of the leases it folds. A key deleted (by the exact path, the
// sweeper or Clear) and written again is above the version it had, because
// that delete folded every lease of its project first: every lease alive
// at the re-creation started from the counter after the delete.
//
// What a lease costs: the grant and the return each take a usage row lock
// for one statement, in a transaction that does not wait for its WAL flush
// (synchronous_commit off: a write under the lease commits after the grant
// and flushes it, and a return lost in a crash leaves a lease row whose
// figures are exact, folded later). A grant shares its round trip with the
// batch's writes.

// Bounds of a lease.
const (
	// leaseMaxBytes bounds the reservation of one lease, which is an
	// eighth of the project's room: a project with room for gigabytes does
	// not lend it all to one committer that might die holding it.
	leaseMaxBytes = 64 << 20
	// leaseMinBatches is how many batches of the size at hand a lease must
	// hold for it to be worth granting: below that the project is close to
	// its quota, and its writes take the exact path.
	leaseMinBatches = 4
	// leaseMinCalls is the number of a project's calls in one batch from
	// which a committer takes a lease: they queued while its previous
	// transaction was in flight, so the project writes back to back.
	leaseMinCalls = 2
	// leaseIdle is how long a committer keeps a lease it does not write
	// under while its queue is empty. Under load a committer's queue
	// empties between many of its batches (a hot project's Sets go to
	// whichever committer is free); returning at once would cost a return
	// and a grant per batch. A tenth of a second spans those gaps and
	// leaves the usage row exact soon after a burst.
	leaseIdle = 100 * time.Millisecond
	// leaseSpread is how many committers a leased project's Sets spread
	// over.
	leaseSpread = 2
)

// sqlAsyncCommit makes the transaction it runs in commit without waiting
// for its WAL flush: grants and returns of leases, which acknowledge
// nothing to a caller.
const sqlAsyncCommit = `SELECT set_config('synchronous_commit', 'off', true)`

// holder is one committer's side of its leases. Only the committer's
// goroutine touches it (commit and the queue's Idle), and Close once that
// goroutine has ended.
type holder struct {
	id string // the lease rows' holder: the daemon's id and the committer's number
	// leases holds the projects it holds a lease on, as far as it knows,
	// with the time of its last write under each.
	leases map[string]time.Time
	// busySince is when the committer started the batch it is applying,
	// in Unix nanoseconds, 0 while it waits for one: committerFor reads it
	// from other goroutines.
	busySince atomic.Int64
}

// newHolders returns one holder per committer, named after a random id of
// this Store, so that two daemons (or two Opens in one process) never share
// a lease row.
func newHolders(n int) ([]*holder, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, fmt.Errorf("draw the daemon's lease id: %w", err)
	}
	id := hex.EncodeToString(b[:])
	hs := make([]*holder, n)
	for i := range hs {
		hs[i] = &holder{id: fmt.Sprintf("%s/%d", id, i), leases: map[string]time.Time{}}
	}
	return hs, nil
}

// leasesOn reports whether committers take leases (Config.Leases).
func (s *Store) leasesOn() bool { return s.cfg.Leases }

// leaseHolders is the number of this Store's committers holding a lease on
// project.
func (s *Store) leaseHolders(project string) *atomic.Int32 {
	if v, ok := s.leased.Load(project); ok {
		return v.(*atomic.Int32)
	}
	v, _ := s.leased.LoadOrStore(project, new(atomic.Int32))
	return v.(*atomic.Int32)
}

// spread reports whether a committer of this Store holds a lease on
// project, so that its Sets go to every committer (committerFor).
func (s *Store) spread(project string) bool {
	v, ok := s.leased.Load(project)
	return ok && v.(*atomic.Int32).Load() > 0
}

// holds reports whether h holds a lease on project, as far as it knows.
func (h *holder) holds(project string) bool {
	_, ok := h.leases[project]
	return ok
}

// take notes that h holds a lease on project and wrote under it at now.
func (h *holder) take(s *Store, project string, now time.Time) {
	if !h.holds(project) {
		s.leaseHolders(project).Add(1)
	}
	h.leases[project] = now
}

// forget notes that h holds no lease on project (any more).
func (h *holder) forget(s *Store, project string) {
	if h.holds(project) {
		delete(h.leases, project)
		s.leaseHolders(project).Add(-1)
	}
}

// committerFor returns the committer of a write of project: the project's
// own, or, for an unconditional Set (set) of a project this Store holds a
// lease on, the first committer that is waiting for work, else the one
// whose transaction started first (it should be the first to take its next
// batch), looking from the project's own. So a hot project's Sets go into
// whichever transaction starts next instead of each waiting for one
// committer's transaction in flight, and that project's transactions
// overlap.
//
// Two Sets of one key may then be in flight in two transactions at once;
// the store never ordered concurrent calls (the daemon sends a request on a
// key only once the one before it on that key is answered), and the
// statement that writes under a lease fails, for the exact path, if a key
// changed under it.
func (s *Store) committerFor(project, key string, set bool) int {
	n := len(s.writeQs)
	home := partition(project, n)
	if !set || n == 1 || !s.spread(project) {
		return home
	}
	best, first := home, int64(0)
	for j := range min(n, leaseSpread) {
		i := (home + j) % n
		since := s.holders[i].busySince.Load()
		if since == 0 {
			return i
		}
		if first == 0 || since < first {
			best, first = i, since
		}
	}
	return best
}

// idleLeases is a committer's Idle: it returns the leases h has not
// written under for leaseIdle, and says when to look again at those it
// keeps.
func (s *Store) idleLeases(h *holder) time.Duration {
	if len(h.leases) == 0 {
		return 0
	}
	now := time.Now()
	var idle []string
	var again time.Duration
	for name, last := range h.leases {
		if left := leaseIdle - now.Sub(last); left > 0 {
			if again == 0 || left < again {
				again = left
			}
			continue
		}
		idle = append(idle, name)
	}
	s.returnLeases(h, idle)
	return again
}

// returnAllLeases ends every lease h holds: at Close.
func (s *Store) returnAllLeases(h *holder) {
	names := make([]string, 0, len(h.leases))
	for name := range h.leases {
		names = append(names, name)
	}
	s.returnLeases(h, names)
}

// returnLeases ends h's leases on the projects of names, in one transaction
// that does not wait for its flush. A return that fails leaves lease rows
// whose figures are exact: the next exact-path transaction of their
// project, or a grant after their deadline, folds them.
func (s *Store) returnLeases(h *holder, names []string) {
	if len(names) == 0 {
		return
	}
	slices.Sort(names) // the order usage rows are locked in
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.StatementTimeout)
	defer cancel()
	b := &pgx.Batch{}
	b.Queue("begin")
	b.Queue(sqlAsyncCommit)
	for _, name := range names {
		b.Queue(sqlLockUsage, name)
		b.Queue(sqlReturnLease, name, h.id)
	}
	b.Queue("commit")
	err := s.pool.SendBatch(ctx, b).Close()
	for _, name := range names {
		h.forget(s, name)
	}
	if err != nil {
		s.log.Info("return quota leases; their projects fold them later", zap.Strings("projects", names), zap.Error(err))
	}
}

// queueGrants queues, in b, one transaction that grants h a lease on each
// project of names (sorted) — p.grant is set for each — and does not wait
// for its flush; each callback sets p.granted when the lease was granted.
func (s *Store) queueGrants(b *pgx.Batch, h *holder, names []string, projects map[string]*fastSets, now any) {
	b.Queue("begin")
	b.Queue(sqlAsyncCommit)
	b.Queue(sqlShareDefaultQuota)
	for _, name := range names {
		p := projects[name]
		b.Queue(sqlLockUsage, name)
		b.Queue(sqlFoldStaleLeases, name, now)
		b.Queue(sqlGrantLease, name, h.id, int64(leaseMaxBytes), leaseMinBatches*p.boundBytes,
			now, s.cfg.LeaseLifetime.Microseconds()).QueryRow(func(row pgx.Row) error {
			var reserved int64
			err := row.Scan(&reserved)
			if err == pgx.ErrNoRows {
				return nil // too little room: the exact path
			}
			if err == nil {
				p.granted = true
				s.grants.Add(1)
			}
			return err
		})
	}
	b.Queue("commit")
}
