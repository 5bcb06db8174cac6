package postgres

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/kvsidecar/kvsidecar/store"
)

// ensureUsageRows creates the usage rows this store has not seen yet, in a
// statement of its own: inside the write transaction, a new row would be
// locked out of the sorted order that keeps transactions from deadlocking.
func (s *Store) ensureUsageRows(ctx context.Context, sorted []string) error {
	var missing []string
	for _, n := range sorted {
		if _, ok := s.known.Load(n); !ok {
			missing = append(missing, n)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	if _, err := s.pool.Exec(ctx, sqlEnsureUsage, missing); err != nil {
		return err
	}
	for _, n := range missing {
		s.known.Store(n, true)
	}
	return nil
}

// txn is one write transaction being built: the batch's calls, what the
// database holds for the keys they touch, and each call's decided result.
type txn struct {
	reqs     []*writeReq
	results  []writeResult
	now      any // the clock parameter, one reading for the whole transaction
	projects map[string]*projectState
	order    []*projectState // by name: the order usage rows are locked in
	conn     *pgx.Conn
	// sweepBatch bounds the expired rows one purge deletes besides the
	// touched keys' (Config.SweepBatch).
	sweepBatch int64
	// committing is set when the round trip holding the commit is sent;
	// commitRound watches it. A failure before it is sent, or one that
	// ended the connection before the commit statement, committed nothing.
	committing  bool
	commitRound *roundWatch
	commitIndex int // of the commit statement in that round trip
}

// projectState is one project's part of a transaction.
type projectState struct {
	name    string
	quota   int64
	version uint64 // the project's version counter, as the decided calls leave it
	// bytes and entries are the stored usage as the statements sent so far
	// leave it; dBytes and dEntries are what the current segment's decided
	// but unsent changes add.
	bytes, entries   int64
	dBytes, dEntries int64
	changed          bool // usage or next expiry must be written back
	purged           bool // no expired row is left (purged or cleared)
	sliced           bool // a slice of expired rows was purged in this transaction
	// waiting is set once a call of the project waits for the next slice
	// of its purge: it and the project's later calls are requeued.
	waiting bool

	// The keys the current segment touches, in first-touch order.
	keys     map[string]*keyState
	keyOrder []string
	readKeys [][]byte // keys whose value an Incr needs

	// The earliest expiry this transaction wrote: a stored one kept by an
	// Incr, or the shortest TTL.
	minAbs *time.Time
	minTTL *int64 // microseconds
}

// keyState is one key as stored when the segment started (orig) and as the
// calls decided so far leave it (cur).
type keyState struct {
	orig, cur entry
	dirty     bool // cur must be written
}

// entry is the state of one key.
type entry struct {
	exists bool // a row is stored, live or expired
	live   bool // exists and has not expired
	size   int64
	value  []byte // known when read for an Incr or written by this batch
	// The expiry: abs as stored (nil for none), or, for a row this batch
	// writes, ttl from the transaction's clock (0 for none). At most one is
	// set.
	abs     *time.Time
	ttl     time.Duration
	version uint64
}

func (e entry) stored() int64 {
	if e.exists {
		return e.size
	}
	return 0
}

func (e entry) count() int64 {
	if e.exists {
		return 1
	}
	return 0
}

func newTxn(reqs []*writeReq, now any) *txn {
	t := &txn{
		reqs:     reqs,
		results:  make([]writeResult, len(reqs)),
		now:      now,
		projects: map[string]*projectState{},
	}
	for _, r := range reqs {
		if _, ok := t.projects[r.project]; !ok {
			p := &projectState{name: r.project, keys: map[string]*keyState{}}
			t.projects[r.project] = p
			t.order = append(t.order, p)
		}
	}
	sort.Slice(t.order, func(i, j int) bool { return t.order[i].name < t.order[j].name })
	return t
}

// run executes the transaction: lock, then per segment (the calls between
// two Clears) read, decide and write; then store usage and commit. The
// statements are pipelined so that a batch without Clear or purge takes
// two round trips.
func (t *txn) run(ctx context.Context) error {
	b := &pgx.Batch{}
	b.Queue("begin")
	for _, p := range t.order {
		b.Queue(sqlLockUsage, p.name).QueryRow(func(row pgx.Row) error {
			err := row.Scan(&p.bytes, &p.entries, &p.quota, &p.version)
			if errors.Is(err, pgx.ErrNoRows) {
				return fmt.Errorf("project %q: %w", p.name, errUsageRowMissing)
			}
			return err
		})
		// The calls are decided against exact usage: the project's leases
		// end first (lease.go).
		b.Queue(sqlFoldLeases, p.name).QueryRow(func(row pgx.Row) error {
			err := row.Scan(&p.bytes, &p.entries, &p.version)
			if errors.Is(err, pgx.ErrNoRows) {
				return nil // no lease
			}
			return err
		})
	}
	for i := 0; ; {
		j := i
		for j < len(t.reqs) && t.reqs[j].op != opClear {
			j++
		}
		if j > i {
			t.queueLoads(b, t.reqs[i:j])
			if err := t.send(ctx, b); err != nil {
				return err
			}
			b = &pgx.Batch{}
			for k := i; k < j; k++ {
				p := t.projects[t.reqs[k].project]
				if p.waiting {
					t.results[k].err = errPurgeMore
					continue
				}
				if err := t.decide(ctx, k); err != nil {
					return err
				}
				if t.results[k].err == errPurgeMore {
					p.waiting = true
				}
			}
			t.queueWrites(b)
		}
		if j == len(t.reqs) {
			break
		}
		if t.projects[t.reqs[j].project].waiting {
			t.results[j].err = errPurgeMore
		} else {
			t.queueClear(b, j)
		}
		i = j + 1
	}
	t.queueUsage(b)
	var tag pgconn.CommandTag
	b.Queue("commit").Exec(func(ct pgconn.CommandTag) error {
		tag = ct
		return nil
	})
	t.commitIndex = len(b.QueuedQueries) - 1
	t.commitRound = watch(b)
	t.committing = true
	if err := t.send(ctx, b); err != nil {
		if tag.String() == "COMMIT" {
			// The server answered the commit, so it is durable; the
			// connection failed after that (the pool drops it).
			return nil
		}
		return err
	}
	if tag.String() != "COMMIT" {
		return fmt.Errorf("commit: the server answered %q", tag.String())
	}
	return nil
}

// uncommitted reports whether the transaction, failed with err, is known
// to have committed nothing.
func (t *txn) uncommitted(err error) bool {
	return !t.committing || pgconn.SafeToRetry(err) || t.commitRound.endedBefore(t.commitIndex, err)
}

func (t *txn) send(ctx context.Context, b *pgx.Batch) error {
	return t.conn.SendBatch(ctx, b).Close()
}

// queueLoads notes the keys the calls of a segment touch and queues the
// statements that read their stored rows.
func (t *txn) queueLoads(b *pgx.Batch, seg []*writeReq) {
	for _, r := range seg {
		p := t.projects[r.project]
		for _, it := range r.items {
			p.touch(it.Key, false)
		}
		for _, k := range r.keys {
			p.touch(k, r.op == opIncr || r.op == opExpire)
		}
	}
	for _, p := range t.order {
		if len(p.keyOrder) == 0 {
			continue
		}
		keys := make([][]byte, len(p.keyOrder))
		for i, k := range p.keyOrder {
			keys[i] = []byte(k)
		}
		readKeys := p.readKeys
		if readKeys == nil {
			readKeys = [][]byte{}
		}
		b.Queue(sqlLoadEntries, p.name, keys, readKeys, t.now).Query(func(rows pgx.Rows) error {
			for rows.Next() {
				var (
					key     []byte
					size    int64
					value   []byte
					abs     *time.Time
					live    bool
					version uint64
				)
				if err := rows.Scan(&key, &size, &value, &abs, &live, &version); err != nil {
					return err
				}
				ks := p.keys[string(key)]
				if ks == nil {
					return fmt.Errorf("load: the database returned key %q, which was not asked for", key)
				}
				ks.orig = entry{exists: true, live: live, size: int64(len(key)) + size, value: value, abs: abs, version: version}
				ks.cur = ks.orig
			}
			return rows.Err()
		})
	}
}

// touch adds key to the keys the segment reads.
func (p *projectState) touch(key string, readValue bool) {
	ks, ok := p.keys[key]
	if !ok {
		ks = &keyState{}
		p.keys[key] = ks
		p.keyOrder = append(p.keyOrder, key)
	}
	if readValue {
		p.readKeys = append(p.readKeys, []byte(key))
	}
}

// put sets the current state of a key and keeps the usage deltas.
func (p *projectState) put(ks *keyState, e entry) {
	p.dBytes += e.stored() - ks.cur.stored()
	p.dEntries += e.count() - ks.cur.count()
	ks.cur = e
	ks.dirty = true
}

// used is the project's stored usage with the decided changes.
func (p *projectState) used() int64 { return p.bytes + p.dBytes }

// decide applies call k to the state in memory and records its result. An
// error fails the transaction; a refusal (quota, not an integer) is the
// call's result and changes nothing.
func (t *txn) decide(ctx context.Context, k int) error {
	r := t.reqs[k]
	p := t.projects[r.project]
	res := &t.results[k]
	// state is what a condition is checked against: the key as the calls
	// before this one leave it.
	state := func(key string) (bool, uint64) {
		cur := p.keys[key].cur
		return cur.live, cur.version
	}
	switch r.op {
	case opSet, opSetMany:
		if conflict := store.CheckConds(r.items, state); conflict != nil {
			res.err = conflict
			return nil
		}
		items := lastPerKey(r.items)
		growth := func() int64 {
			var g int64
			for _, it := range items {
				g += store.EntrySize(it.Key, it.Value) - p.keys[it.Key].cur.stored()
			}
			return g
		}
		refusal, err := t.checkQuota(ctx, p, growth)
		if err != nil {
			return err
		}
		if refusal != nil {
			res.err = refusal
			return nil
		}
		p.version++
		res.version = p.version
		for _, it := range items {
			p.put(p.keys[it.Key], entry{
				exists:  true,
				live:    true,
				size:    store.EntrySize(it.Key, it.Value),
				value:   it.Value,
				ttl:     it.TTL,
				version: p.version,
			})
		}

	case opDelete, opDeleteMany:
		if r.cond.Check {
			if conflict := store.CheckConds([]store.Item{{Key: r.keys[0], Cond: r.cond}}, state); conflict != nil {
				res.err = conflict
				return nil
			}
		}
		res.existed = make([]bool, len(r.keys))
		for i, key := range r.keys {
			ks := p.keys[key]
			res.existed[i] = ks.cur.live
			if ks.cur.exists {
				p.put(ks, entry{})
			}
		}

	case opIncr:
		key := r.keys[0]
		ks := p.keys[key]
		cur := ks.cur
		value, n, err := store.Increment(cur.value, cur.live, r.delta)
		if err != nil {
			res.err = err
			return nil
		}
		next := entry{exists: true, live: true, size: store.EntrySize(key, value), value: value}
		if cur.live {
			next.abs, next.ttl = cur.abs, cur.ttl // an existing key keeps its expiry
		} else {
			next.ttl = r.ttl
		}
		// A purge may turn an expired cur into a missing one, so growth
		// reads ks.cur afresh.
		refusal, err := t.checkQuota(ctx, p, func() int64 { return next.size - ks.cur.stored() })
		if err != nil {
			return err
		}
		if refusal != nil {
			res.err = refusal
			return nil
		}
		p.version++
		next.version = p.version
		p.put(ks, next)
		res.n = n
		res.version = p.version

	case opExpire:
		ks := p.keys[r.keys[0]]
		if !ks.cur.live {
			return nil
		}
		// The value and size stay; only the expiry and the version change,
		// so the usage does too little to need a quota check: not at all.
		next := ks.cur
		if next.value == nil {
			next.value = []byte{} // an empty value; nil would be NULL
		}
		next.abs, next.ttl = nil, r.ttl
		p.version++
		next.version = p.version
		p.put(ks, next)
		res.version = p.version

	default:
		return fmt.Errorf("decide: unexpected operation %d", r.op)
	}
	return nil
}

// lastPerKey returns items without the earlier items of a key given more
// than once: the last one wins.
func lastPerKey(items []store.Item) []store.Item {
	if len(items) < 2 {
		return items
	}
	last := make(map[string]int, len(items))
	for i, it := range items {
		last[it.Key] = i
	}
	if len(last) == len(items) {
		return items
	}
	out := make([]store.Item, 0, len(last))
	for i, it := range items {
		if last[it.Key] == i {
			out = append(out, it)
		}
	}
	return out
}

// checkQuota decides whether a write that grows p's stored usage by
// growth() fits. If it does not, it first deletes p's expired entries, which
// never count against the quota, and asks growth() again, since an
// overwritten entry may have been among them.
//
// One slice of Config.SweepBatch expired entries is deleted per project and
// transaction: when the write still does not fit and more may remain, the
// refusal is errPurgeMore, and the committer requeues the call (with the
// project's later calls), so that the purge goes on in the next
// transaction instead of holding the committer for all of it.
func (t *txn) checkQuota(ctx context.Context, p *projectState, growth func() int64) (refusal, err error) {
	need := growth()
	if need <= 0 || p.used()+need <= p.quota {
		return nil, nil
	}
	if !p.purged {
		if p.sliced {
			return errPurgeMore, nil
		}
		more, err := t.purge(ctx, p)
		if err != nil {
			return nil, err
		}
		need = growth()
		if need <= 0 || p.used()+need <= p.quota {
			return nil, nil
		}
		if more {
			return errPurgeMore, nil
		}
	}
	return store.QuotaError(p.name, p.used(), need, p.quota), nil
}

// purge deletes a slice of p's expired rows now, in the middle of a
// segment — the expired rows of the keys the segment touches, and up to
// t.sweepBatch others — and brings the segment's state in line: a touched
// key whose stored row was expired no longer has one. more reports that
// expired rows may remain.
func (t *txn) purge(ctx context.Context, p *projectState) (more bool, err error) {
	var bytes, n int64
	touched := make([][]byte, 0, len(p.keyOrder))
	for _, k := range p.keyOrder {
		if ks := p.keys[k]; ks.orig.exists && !ks.orig.live {
			touched = append(touched, []byte(k))
		}
	}
	b := &pgx.Batch{}
	b.Queue(sqlPurgeExpired, p.name, t.now, t.sweepBatch, touched).QueryRow(func(row pgx.Row) error {
		return row.Scan(&bytes, &n)
	})
	b.Queue(sqlResetNextExpiry, p.name)
	if err := t.send(ctx, b); err != nil {
		return false, err
	}
	more = n >= t.sweepBatch
	p.sliced = true
	p.purged = !more
	p.changed = true
	p.bytes -= bytes
	p.entries -= n
	for _, ks := range p.keys {
		if !ks.orig.exists || ks.orig.live {
			continue
		}
		if ks.dirty {
			// The deltas counted the stored row as replaced; it is gone
			// already, so the change adds its size back.
			p.dBytes += ks.orig.size
			p.dEntries++
		} else {
			ks.cur = entry{}
		}
		ks.orig = entry{}
	}
	return more, nil
}

// queueWrites queues the statements that store the segment's decided state
// of its keys, and starts a new segment.
func (t *txn) queueWrites(b *pgx.Batch) {
	for _, p := range t.order {
		var (
			keys, values [][]byte
			abs          []*time.Time
			ttls         []int64
			versions     []int64
			deleted      [][]byte
		)
		for _, k := range p.keyOrder {
			ks := p.keys[k]
			switch {
			case !ks.dirty:
			case ks.cur.exists:
				keys = append(keys, []byte(k))
				values = append(values, ks.cur.value)
				abs = append(abs, ks.cur.abs)
				us := ttlMicros(ks.cur.ttl)
				ttls = append(ttls, us)
				versions = append(versions, int64(ks.cur.version))
				p.noteExpiry(ks.cur.abs, us)
			case ks.orig.exists:
				deleted = append(deleted, []byte(k))
			}
		}
		if len(keys) > 0 {
			b.Queue(sqlUpsertEntries, p.name, keys, values, abs, ttls, t.now, versions)
		}
		if len(deleted) > 0 {
			b.Queue(sqlDeleteEntries, p.name, deleted)
		}
		if len(keys)+len(deleted) > 0 {
			p.changed = true
		}
		p.bytes += p.dBytes
		p.entries += p.dEntries
		p.dBytes, p.dEntries = 0, 0
		clear(p.keys)
		p.keyOrder = p.keyOrder[:0]
		p.readKeys = nil
	}
}

// ttlMicros converts a TTL to whole microseconds, the database's
// resolution, rounding up so that a positive TTL never becomes "no expiry".
func ttlMicros(ttl time.Duration) int64 {
	if ttl <= 0 {
		return 0
	}
	us := int64(ttl / time.Microsecond)
	if ttl%time.Microsecond != 0 {
		us++ // not ttl+999ns first: that overflows for TTLs near the maximum
	}
	return us
}

// noteExpiry keeps the earliest expiry the transaction writes.
func (p *projectState) noteExpiry(abs *time.Time, ttlMicros int64) {
	if abs != nil && (p.minAbs == nil || abs.Before(*p.minAbs)) {
		p.minAbs = abs
	}
	if ttlMicros > 0 && (p.minTTL == nil || ttlMicros < *p.minTTL) {
		p.minTTL = &ttlMicros
	}
}

// queueClear queues Clear call k. What precedes it has been queued already,
// so it sees the writes of earlier calls.
func (t *txn) queueClear(b *pgx.Batch, k int) {
	p := t.projects[t.reqs[k].project]
	b.Queue(sqlClearProject, p.name, t.now).QueryRow(func(row pgx.Row) error {
		// A Clear queued before anything was sent shares its round trip
		// with the lock of the usage row, whose callback runs first and
		// loads the usage from before the Clear: zero it again here.
		p.bytes, p.entries = 0, 0
		return row.Scan(&t.results[k].n)
	})
	b.Queue(sqlForgetExpiry, p.name)
	// Zeroed now as well, for a usage update queued before that round trip
	// is sent (a batch that ends with this Clear).
	p.bytes, p.entries = 0, 0
	p.purged = true
	p.changed = true
}

// queueUsage queues the update of every usage row the transaction changed.
func (t *txn) queueUsage(b *pgx.Batch) {
	for _, p := range t.order {
		if p.changed {
			b.Queue(sqlUpdateUsage, p.name, p.bytes, p.entries, p.minAbs, p.minTTL, t.now, int64(p.version))
		}
	}
}
