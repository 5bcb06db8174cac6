package postgres

import (
	"context"
	"errors"
	"slices"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/kvsidecar/kvsidecar/store"
)

// fastSets is the part of a batch of Sets and SetManys that belongs to one
// project, prepared for sqlFastSet.
type fastSets struct {
	index        map[string]int // key → its position in keys
	keys, values [][]byte
	ttls         []int64 // microseconds, 0 for none
	minTTL       *int64
	ords         []int64 // per key: the position (1, 2, …) of the last call that set it
	calls        int64   // calls of the project in the batch
	finalBytes   int64   // sizes of keys with their last values
	boundBytes   int64   // sizes of every item of every call
	base         uint64  // the project's version counter before the batch
	applied      bool
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
// every project with room for all of its items, and no other writer between
// the statement's snapshot and its lock of the usage row, one statement
// writes them and its usage. It returns the projects it
// applied; the calls of the others (close to their quota) must go through
// the general path, which decides them one by one. versions[i] is the
// version reqs[i] wrote, when its project was applied. An error means
// nothing was committed, or, during the commit, that the outcome is
// unknown; it is wrapped by notCommitted when nothing was. retry takes a
// checked connection.
func (s *Store) commitFast(reqs []*writeReq, retry bool) (applied map[string]bool, versions []uint64, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.StatementTimeout)
	defer cancel()

	// One statement per project, with each key once and its last value.
	projects := map[string]*fastSets{}
	var names []string
	ords := make([]int64, len(reqs)) // each call's position among its project's
	for ri, r := range reqs {
		p := projects[r.project]
		if p == nil {
			p = &fastSets{index: map[string]int{}}
			projects[r.project] = p
			names = append(names, r.project)
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
			p.keys = append(p.keys, []byte(it.Key))
			p.values = append(p.values, it.Value)
			p.ttls = append(p.ttls, ttlMicros(it.TTL))
			p.ords = append(p.ords, p.calls)
			p.finalBytes += size
		}
	}
	for _, p := range projects {
		for _, us := range p.ttls {
			if us > 0 && (p.minTTL == nil || us < *p.minTTL) {
				p.minTTL = &us
			}
		}
	}
	slices.Sort(names) // the order usage rows are locked in
	if err := s.ensureUsageRows(ctx, names); err != nil {
		return nil, nil, notCommitted(err)
	}

	conn, err := s.acquire(ctx, retry)
	if err != nil {
		return nil, nil, notCommitted(err)
	}
	defer conn.Release()
	now := s.nowArg()
	// No begin and commit: the statements of a pipeline run in one implicit
	// transaction, which commits at its end, or rolls back entirely if any
	// statement fails. Each statement locks its project's usage row itself,
	// in the order of names.
	b := &pgx.Batch{}
	for _, name := range names {
		p := projects[name]
		var qq *pgx.QueuedQuery
		if len(p.keys) == 1 {
			qq = b.Queue(sqlFastSetOne, name, p.keys[0], p.values[0], p.ttls[0], now, p.finalBytes, p.boundBytes, p.calls)
		} else {
			qq = b.Queue(sqlFastSet, name, p.keys, p.values, p.ttls, now, p.finalBytes, p.boundBytes, p.minTTL, p.ords, p.calls)
		}
		qq.QueryRow(func(row pgx.Row) error {
			err := row.Scan(&p.base)
			if errors.Is(err, pgx.ErrNoRows) {
				return nil // no room, or another writer came first
			}
			p.applied = err == nil
			return err
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
		return nil, nil, err
	}
	applied = map[string]bool{}
	for name, p := range projects {
		if p.applied {
			applied[name] = true
		}
	}
	versions = make([]uint64, len(reqs))
	for i, r := range reqs {
		versions[i] = projects[r.project].base + uint64(ords[i])
	}
	return applied, versions, nil
}
