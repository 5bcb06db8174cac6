package postgres

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/kvsidecar/kvsidecar/store"
)

// lockFirstBatches is how many batches of a project lock its usage row in
// a statement of their own, as if run with lockFirst, after one found
// another writer ahead of it. While another daemon keeps writing the
// project, a statement that takes the lock itself would find one ahead
// nearly every time and need a second round trip; locking first waits for
// that writer once.
const lockFirstBatches = 16

// takeLockFirst reports whether the project's next batch locks its usage
// row first (see lockFirstBatches), and counts it. Only the project's
// committer calls it.
func (s *Store) takeLockFirst(project string) bool {
	v, ok := s.lockFirst.Load(project)
	if !ok {
		return false
	}
	if n := v.(int); n > 1 {
		s.lockFirst.Store(project, n-1)
	} else {
		s.lockFirst.Delete(project)
	}
	return true
}

// fastSets is the part of a batch of Sets and SetManys that belongs to one
// project, prepared for sqlFastSet.
type fastSets struct {
	index        map[string]int // key → its position in keys
	keyBuf       []byte         // the keys, one after the other: keys are views of it
	keys, values [][]byte
	ttls         []int64 // microseconds, 0 for none
	minTTL       *int64  // &shortest, nil for none
	shortest     int64
	ords         []int64 // per key: the position (1, 2, …) of the last call that set it
	calls        int64   // calls of the project in the batch
	finalBytes   int64   // sizes of keys with their last values
	boundBytes   int64   // sizes of every item of every call
	base         uint64  // the project's version counter before the batch
	applied      bool
	contended    bool // another writer came first; not applied
	// Under a lease (lease.go): lease says the batch is written under the
	// committer's lease, grant that the lease is granted in the same round
	// trip, and granted that it was.
	lease, grant, granted bool
}

// fastScratch is what commitFast builds a batch's statements in, kept
// from batch to batch (fastScratchPool) so that a batch allocates nothing
// per call or key in steady state. Its maps and slices are emptied, and
// their references to the calls' keys and values dropped, when the batch
// is done.
type fastScratch struct {
	projects map[string]*fastSets
	names    []string
	ords     []int64
	sets     []*fastSets // every fastSets made so far; the first used in use
	used     int
}

// fastScratchKeepBytes and fastScratchKeepKeys bound what a fastSets
// keeps for the next batch, fastScratchKeepProjects how many a fastScratch
// keeps: a batch of many or large keys, or of many projects, drops what it
// grew rather than holding it.
const (
	fastScratchKeepBytes    = 1 << 20
	fastScratchKeepKeys     = 4096
	fastScratchKeepProjects = 64
)

var fastScratchPool = sync.Pool{New: func() any {
	return &fastScratch{projects: map[string]*fastSets{}}
}}

// ordsFor returns sc's ords with room for n calls.
func (sc *fastScratch) ordsFor(n int) []int64 {
	if cap(sc.ords) < n {
		sc.ords = make([]int64, n)
	}
	sc.ords = sc.ords[:n]
	return sc.ords
}

// take returns an empty fastSets for one more project of the batch.
func (sc *fastScratch) take() *fastSets {
	if sc.used == len(sc.sets) {
		sc.sets = append(sc.sets, &fastSets{index: map[string]int{}})
	}
	p := sc.sets[sc.used]
	sc.used++
	return p
}

// release empties sc and gives it back to fastScratchPool.
func (sc *fastScratch) release() {
	for _, p := range sc.sets[:sc.used] {
		p.reset()
	}
	if len(sc.sets) > fastScratchKeepProjects {
		clear(sc.sets[fastScratchKeepProjects:])
		sc.sets = sc.sets[:fastScratchKeepProjects]
	}
	sc.used = 0
	clear(sc.projects)
	clear(sc.names)
	sc.names = sc.names[:0]
	fastScratchPool.Put(sc)
}

// reset empties p, keeping its buffers unless they grew past
// fastScratchKeepBytes or fastScratchKeepKeys.
func (p *fastSets) reset() {
	if cap(p.keyBuf) > fastScratchKeepBytes || cap(p.keys) > fastScratchKeepKeys {
		*p = fastSets{index: map[string]int{}}
		return
	}
	clear(p.index)
	clear(p.keys)
	clear(p.values)
	*p = fastSets{index: p.index, keyBuf: p.keyBuf[:0], keys: p.keys[:0], values: p.values[:0], ttls: p.ttls[:0], ords: p.ords[:0]}
}

// onlySets reports whether every call of a batch is an unconditional Set or
// SetMany.
func onlySets(reqs []*writeReq) bool {
	for _, r := range reqs {
		if r.op != opSet && r.op != opSetMany {
			return false
		}
		for _, it := range r.items {
			if it.Cond.Check {
				return false
			}
		}
	}
	return true
}

// commitFast commits a batch of Sets and SetManys in one round trip: for
// every project with room for all of its items, one statement writes them
// and its usage. It returns the projects it applied, and those it did not
// because another writer committed to their usage row while the statement
// waited for its lock (contended): those may run again with lockFirst,
// which locks each usage row in a statement of its own first, so that the
// next statement's snapshot holds every earlier writer. The calls of the
// other projects (close to their quota) must go through the general path,
// which decides them one by one. versions[i] is the version reqs[i] wrote,
// when its project was applied. An error means nothing was committed, or,
// during the commit, that the outcome is unknown; it is wrapped by
// notCommitted when nothing was. retry takes a checked connection.
//
// A project h leases, or whose calls come back to back (leaseMinCalls, or
// another committer of this Store leases it), is written under h's lease
// instead (sqlLeaseSet), granted first in the same round trip if h has
// none. A project whose lease turned out to have ended (folded by another
// transaction) or to lack room for the batch is contended too, and is
// granted a lease on the second run; one that was granted none (too little
// room) or could not write under a fresh one goes to the general path.
func (s *Store) commitFast(h *holder, reqs []*writeReq, retry, lockFirst bool) (applied, contended map[string]bool, versions []uint64, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.StatementTimeout)
	defer cancel()

	// One statement per project, with each key once and its last value.
	sc := fastScratchPool.Get().(*fastScratch)
	defer sc.release()
	projects := sc.projects
	ords := sc.ordsFor(len(reqs)) // each call's position among its project's
	for ri, r := range reqs {
		p := projects[r.project]
		if p == nil {
			p = sc.take()
			projects[r.project] = p
			sc.names = append(sc.names, r.project)
		}
		p.calls++
		ords[ri] = p.calls
		for _, it := range r.items {
			size := store.EntrySize(it.Key, it.Value)
			p.boundBytes += size
			if i, ok := p.index[it.Key]; ok {
				p.finalBytes += size - store.EntrySize(it.Key, p.values[i])
				p.values[i], p.ttls[i], p.ords[i] = it.Value, ttlMicros(it.TTL), p.calls
				continue
			}
			p.index[it.Key] = len(p.keys)
			start := len(p.keyBuf)
			p.keyBuf = append(p.keyBuf, it.Key...)
			p.keys = append(p.keys, p.keyBuf[start:len(p.keyBuf):len(p.keyBuf)])
			p.values = append(p.values, it.Value)
			p.ttls = append(p.ttls, ttlMicros(it.TTL))
			p.ords = append(p.ords, p.calls)
			p.finalBytes += size
		}
	}
	for _, p := range projects {
		var shortest int64
		for _, us := range p.ttls {
			if us > 0 && (shortest == 0 || us < shortest) {
				shortest = us
			}
		}
		if shortest > 0 {
			p.shortest = shortest
			p.minTTL = &p.shortest
		}
	}
	names := sc.names
	slices.Sort(names) // the order usage rows are locked in
	if err := s.ensureUsageRows(ctx, names); err != nil {
		return nil, nil, nil, notCommitted(err)
	}
	var grants []string
	if s.leasesOn() {
		for _, name := range names {
			p := projects[name]
			switch {
			case h.holds(name):
				p.lease = true
			case p.calls >= leaseMinCalls || s.spread(name):
				p.lease, p.grant = true, true
				grants = append(grants, name)
			}
		}
	}

	conn, err := s.acquire(ctx, retry)
	if err != nil {
		return nil, nil, nil, notCommitted(err)
	}
	defer conn.Release()
	now := s.nowArg()
	// No begin and commit: the statements of a pipeline run in one implicit
	// transaction, which commits at its end, or rolls back entirely if any
	// statement fails. Each statement locks its project's usage row itself
	// (or after sqlLockUsage, with lockFirst), in the order of names.
	b := &pgx.Batch{}
	if len(grants) > 0 {
		s.queueGrants(b, h, grants, projects, now)
	}
	for _, name := range names {
		p := projects[name]
		if p.lease {
			s.queueLeaseSet(b, h, name, p, now)
			continue
		}
		if lockFirst || s.takeLockFirst(name) {
			b.Queue(sqlLockUsage, name).QueryRow(func(row pgx.Row) error {
				var bytes, entries, quota int64
				var version uint64
				err := row.Scan(&bytes, &entries, &quota, &version)
				if errors.Is(err, pgx.ErrNoRows) {
					return nil // the fast statement finds no row either
				}
				return err
			})
		}
		var qq *pgx.QueuedQuery
		if len(p.keys) == 1 {
			qq = b.Queue(sqlFastSetOne, name, p.keys[0], p.values[0], p.ttls[0], now, p.finalBytes, p.boundBytes, p.calls)
		} else {
			qq = b.Queue(sqlFastSet, name, &byteaArray{elems: p.keys}, &byteaArray{elems: p.values}, &int8Array{elems: p.ttls},
				now, p.finalBytes, p.boundBytes, p.minTTL, &int8Array{elems: p.ords}, p.calls)
		}
		qq.QueryRow(func(row pgx.Row) error {
			var base *int64
			err := row.Scan(&base)
			switch {
			case errors.Is(err, pgx.ErrNoRows):
				return nil // no room
			case err != nil:
				return err
			case base == nil:
				p.contended = true
			default:
				p.applied, p.base = true, uint64(*base)
			}
			return nil
		})
	}
	// The implicit transaction commits after the last statement: if the
	// server ended the connection in answer to any of them, or nothing was
	// sent, nothing was committed.
	w := watch(b)
	if err := conn.Conn().SendBatch(ctx, b).Close(); err != nil {
		if pgconn.SafeToRetry(err) || w.endedBefore(len(b.QueuedQueries), err) {
			err = notCommitted(err)
		}
		return nil, nil, nil, err
	}
	applied, contended = map[string]bool{}, map[string]bool{}
	var wrote time.Time // for a lease's idle time, read once
	for name, p := range projects {
		if p.lease {
			switch {
			case p.applied:
				applied[name] = true
				if wrote.IsZero() {
					wrote = time.Now()
				}
				h.take(s, name, wrote)
			case !p.grant && !lockFirst:
				// The lease h thought it held had ended: a new one, once.
				h.forget(s, name)
				contended[name] = true
			default:
				h.forget(s, name) // the general path
			}
			continue
		}
		if p.applied {
			applied[name] = true
		}
		if p.contended {
			contended[name] = true
			s.lockFirst.Store(name, lockFirstBatches)
		}
	}
	versions = make([]uint64, len(reqs))
	for i, r := range reqs {
		versions[i] = projects[r.project].base + uint64(ords[i])
	}
	return applied, contended, versions, nil
}

// queueLeaseSet queues, in b, the write of p's Sets under h's lease on
// project name; its callback sets p.applied and p.base when it wrote.
func (s *Store) queueLeaseSet(b *pgx.Batch, h *holder, name string, p *fastSets, now any) {
	// Keys in byte order, so that two holders (of two daemons) writing
	// the same keys lock their rows in the same order and never deadlock.
	order := make([]int, len(p.keys))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return bytes.Compare(p.keys[a], p.keys[b]) })
	keys := make([][]byte, len(order))
	values := make([][]byte, len(order))
	ttls := make([]int64, len(order))
	ords := make([]int64, len(order))
	for i, j := range order {
		keys[i], values[i], ttls[i], ords[i] = p.keys[j], p.values[j], p.ttls[j], p.ords[j]
	}
	b.Queue(sqlLeaseSet, name, &byteaArray{elems: keys}, &byteaArray{elems: values}, &int8Array{elems: ttls},
		now, p.finalBytes, p.boundBytes, p.minTTL, &int8Array{elems: ords}, p.calls,
		h.id, s.cfg.LeaseLifetime.Microseconds()).QueryRow(func(row pgx.Row) error {
		var base int64
		var conflict *int64
		err := row.Scan(&base, &conflict)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			return nil // no lease, or no room left in it
		case err != nil:
			return err
		}
		p.applied, p.base = true, uint64(base)
		return nil
	})
}

// byteaArray is a bytea[] parameter that pgx encodes without reflection
// and without an allocation per element (pgtype.ArrayGetter, each element
// a byteaParam, which points into elems).
type byteaArray struct {
	elems [][]byte
	dims  [1]pgtype.ArrayDimension
}

func (a *byteaArray) Dimensions() []pgtype.ArrayDimension {
	a.dims[0] = pgtype.ArrayDimension{Length: int32(len(a.elems)), LowerBound: 1}
	return a.dims[:]
}

func (a *byteaArray) Index(i int) any { return byteaParam{&a.elems[i]} }

func (a *byteaArray) IndexType() any { return byteaParam{} }

// byteaParam is one bytea element. It holds a pointer only, so that
// passing it as an interface allocates nothing.
type byteaParam struct{ b *[]byte }

func (p byteaParam) BytesValue() ([]byte, error) { return *p.b, nil }

// int8Array is an int8[] parameter that pgx encodes without reflection and
// without an allocation per element (each element an int8Param).
type int8Array struct {
	elems []int64
	dims  [1]pgtype.ArrayDimension
}

func (a *int8Array) Dimensions() []pgtype.ArrayDimension {
	a.dims[0] = pgtype.ArrayDimension{Length: int32(len(a.elems)), LowerBound: 1}
	return a.dims[:]
}

func (a *int8Array) Index(i int) any { return int8Param{&a.elems[i]} }

func (a *int8Array) IndexType() any { return int8Param{} }

// int8Param is one int8 element. It holds a pointer only, so that passing
// it as an interface allocates nothing.
type int8Param struct{ v *int64 }

func (p int8Param) Int64Value() (pgtype.Int8, error) {
	return pgtype.Int8{Int64: *p.v, Valid: true}, nil
}
