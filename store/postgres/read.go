package postgres

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/kvsidecar/kvsidecar/store"
	"github.com/kvsidecar/kvsidecar/store/internal/batch"
)

// readReq is one point read (Get, Has, GetMany, HasMany) waiting for the
// reader.
type readReq struct {
	project string
	keys    []string
	values  bool // Get and GetMany want values; Has and HasMany only presence
	// async is set for a read of Do (async.go): its outcome goes into the
	// op, and keys is one[:], the op's key held in the call itself, so
	// that the read allocates no slice of its own.
	async *store.Op
	one   [1]string
}

// readResult is the answer to one read: per key, whether it is live and,
// if values were asked for, its value.
type readResult struct {
	found    []bool
	values   [][]byte
	versions []uint64 // with values
	err      error
}

// readCall is a read in the reader's queue.
type readCall = batch.Call[readReq, readResult]

// newReadQueue returns the reader's queue, whose goroutine runs readRound
// until Close: it takes what is queued right now, up to Config.MaxBatch
// keys, answers it with one round trip, and while that round is in flight,
// new reads queue for the next one.
func (s *Store) newReadQueue() *batch.Queue[readReq, readResult] {
	return batch.New(batch.Config[readReq, readResult]{
		Name:             "read",
		Capacity:         s.cfg.QueueSize,
		Key:              func(r readReq) string { return r.project },
		MaxPerKey:        max(int(s.cfg.ProjectQueueShare*float64(s.cfg.QueueSize)), 1),
		MaxWeight:        s.cfg.MaxBatch,
		Weight:           func(r readReq) int { return len(r.keys) },
		Abandonable:      true,
		AbandonedMessage: "no answer from the database in time",
		Apply:            s.readRound,
		Notify:           s.notifyRead,
		Logger:           s.log,
	})
}

// read queues r for the reader and waits for the answer, within ctx. While
// the queue is full the caller waits; when ctx ends first the call fails
// with store.ErrBusy. A caller whose ctx ends while its round is in flight
// gets store.ErrUnavailable.
func (s *Store) read(ctx context.Context, r readReq) readResult {
	res, err := s.readQ.Submit(ctx, r)
	if err != nil {
		return readResult{err: err}
	}
	return res
}

// Get returns the value of key. See store.Store.
func (s *Store) Get(ctx context.Context, project, key string) ([]byte, bool, error) {
	v, found, err := s.GetVersioned(ctx, project, key)
	return v.Value, found, err
}

// GetVersioned returns the value of key and its version. See store.Store.
func (s *Store) GetVersioned(ctx context.Context, project, key string) (store.Versioned, bool, error) {
	if err := checkProject(project); err != nil {
		return store.Versioned{}, false, err
	}
	if err := s.cfg.Limits.CheckKey(key); err != nil {
		return store.Versioned{}, false, err
	}
	res := s.read(ctx, readReq{project: project, keys: []string{key}, values: true})
	if res.err != nil {
		return store.Versioned{}, false, res.err
	}
	return store.Versioned{Value: res.values[0], Version: res.versions[0]}, res.found[0], nil
}

// GetMany returns one value per key, nil for a missing key. See store.Store.
func (s *Store) GetMany(ctx context.Context, project string, keys []string) ([][]byte, error) {
	if err := checkProject(project); err != nil {
		return nil, err
	}
	if err := s.cfg.Limits.CheckKeys(keys); err != nil {
		return nil, err
	}
	if len(keys) == 0 {
		if err := s.ready(ctx); err != nil {
			return nil, err
		}
		return [][]byte{}, nil
	}
	res := s.read(ctx, readReq{project: project, keys: keys, values: true})
	return res.values, res.err
}

// GetManyVersioned returns one value and version per key. See store.Store.
func (s *Store) GetManyVersioned(ctx context.Context, project string, keys []string) ([]store.Versioned, error) {
	if err := checkProject(project); err != nil {
		return nil, err
	}
	if err := s.cfg.Limits.CheckKeys(keys); err != nil {
		return nil, err
	}
	if len(keys) == 0 {
		if err := s.ready(ctx); err != nil {
			return nil, err
		}
		return []store.Versioned{}, nil
	}
	res := s.read(ctx, readReq{project: project, keys: keys, values: true})
	if res.err != nil {
		return nil, res.err
	}
	vs := make([]store.Versioned, len(keys))
	for i := range vs {
		vs[i] = store.Versioned{Value: res.values[i], Version: res.versions[i]}
	}
	return vs, nil
}

// TTL returns the remaining time to live of key. See store.Store.
func (s *Store) TTL(ctx context.Context, project, key string) (time.Duration, bool, error) {
	if err := checkProject(project); err != nil {
		return 0, false, err
	}
	if err := s.cfg.Limits.CheckKey(key); err != nil {
		return 0, false, err
	}
	if err := s.ready(ctx); err != nil {
		return 0, false, err
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.StatementTimeout)
	defer cancel()
	var us int64
	err := s.pool.QueryRow(ctx, sqlTTL, project, []byte(key), s.nowArg()).Scan(&us)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, dbError(err)
	}
	return time.Duration(us) * time.Microsecond, true, nil
}

// Has reports whether key exists. See store.Store.
func (s *Store) Has(ctx context.Context, project, key string) (bool, error) {
	if err := checkProject(project); err != nil {
		return false, err
	}
	if err := s.cfg.Limits.CheckKey(key); err != nil {
		return false, err
	}
	res := s.read(ctx, readReq{project: project, keys: []string{key}})
	if res.err != nil {
		return false, res.err
	}
	return res.found[0], nil
}

// HasMany reports, per key, whether it exists. See store.Store.
func (s *Store) HasMany(ctx context.Context, project string, keys []string) ([]bool, error) {
	if err := checkProject(project); err != nil {
		return nil, err
	}
	if err := s.cfg.Limits.CheckKeys(keys); err != nil {
		return nil, err
	}
	if len(keys) == 0 {
		if err := s.ready(ctx); err != nil {
			return nil, err
		}
		return []bool{}, nil
	}
	res := s.read(ctx, readReq{project: project, keys: keys})
	return res.found, res.err
}

// readProject is one project's part of a read round: every key asked for,
// once, and what the round found for it.
type readProject struct {
	index map[string]int // key → its position in keys
	keys  []readKey
}

// readKey is one key of a read round.
type readKey struct {
	key     string
	values  bool // a caller wants its value, not only whether it is live
	found   bool // the key is live
	value   []byte
	version uint64
}

// entry returns what the round found for key, which was asked for.
func (p *readProject) entry(key string) *readKey { return &p.keys[p.index[key]] }

// readRound answers a round of reads with one pipelined round trip: per
// project, one statement for the keys whose values are wanted and one for
// the keys only tested.
func (s *Store) readRound(calls []*readCall) {
	projects := map[string]*readProject{}
	keyBytes := 0
	for _, c := range calls {
		r := &c.Item
		p := projects[r.project]
		if p == nil {
			p = &readProject{index: map[string]int{}}
			projects[r.project] = p
		}
		for _, k := range r.keys {
			i, ok := p.index[k]
			if !ok {
				i = len(p.keys)
				p.index[k] = i
				p.keys = append(p.keys, readKey{key: k})
				keyBytes += len(k)
			}
			if r.values {
				p.keys[i].values = true
			}
		}
	}

	now := s.nowArg()
	round := func() *pgx.Batch {
		b := &pgx.Batch{}
		s.queueReads(b, projects, keyBytes, now)
		return b
	}
	ctx, cancel := s.roundContext(calls)
	err := s.pool.SendBatch(ctx, round()).Close()
	if connLost(err) {
		// Reads are safe to run again: once, on a checked connection.
		for _, p := range projects {
			for i := range p.keys {
				e := &p.keys[i]
				e.found, e.value, e.version = false, nil, 0
			}
		}
		err = s.sendChecked(ctx, round())
	}
	cancel()
	if err != nil {
		err = dbError(err)
		for _, c := range calls {
			c.Fail(err)
		}
		return
	}

	// A value read for several callers is handed to the first as is and
	// copied for the others, so that no two callers share a buffer.
	handed := map[*byte]bool{}
	for _, c := range calls {
		r := &c.Item
		p := projects[r.project]
		if r.async != nil {
			answerOp(c, p, handed)
			continue
		}
		res := readResult{found: make([]bool, len(r.keys))}
		if r.values {
			res.values = make([][]byte, len(r.keys))
			res.versions = make([]uint64, len(r.keys))
		}
		for i, k := range r.keys {
			e := p.entry(k)
			res.found[i] = e.found
			if e.found && r.values {
				v := e.value
				if len(v) > 0 && handed[&v[0]] {
					v = bytes.Clone(v)
				} else if len(v) > 0 {
					handed[&v[0]] = true
				}
				res.values[i] = v
				res.versions[i] = e.version
			}
		}
		c.Answer(res)
	}
}

// roundContext bounds a read round: by the statement timeout, and by the
// latest deadline of its calls when every one has one (reads of Do), since
// past it nobody waits for the answer. A round that its submitter applies
// itself (Do) thus holds the submitter for no longer than its ops' time.
func (s *Store) roundContext(calls []*readCall) (context.Context, context.CancelFunc) {
	limit := time.Now().Add(s.cfg.StatementTimeout)
	if d := batch.Deadline(calls); !d.IsZero() && d.Before(limit) {
		limit = d
	}
	return context.WithDeadline(context.Background(), limit)
}

// queueReads queues the statements of a read round on b: per project, one
// for the keys whose values are wanted and one for those only tested. The
// keys are passed from one buffer of keyBytes bytes, and the rows' keys are
// read in the driver's memory: a round allocates little per key beyond the
// values it returns. The callbacks fill in each project's keys.
func (s *Store) queueReads(b *pgx.Batch, projects map[string]*readProject, keyBytes int, now any) {
	buf := make([]byte, 0, keyBytes)
	param := func(k string) []byte {
		start := len(buf)
		buf = append(buf, k...)
		return buf[start:len(buf):len(buf)]
	}
	for name, p := range projects {
		var valueKeys, hasKeys [][]byte
		for _, e := range p.keys {
			if e.values {
				valueKeys = append(valueKeys, param(e.key))
			} else {
				hasKeys = append(hasKeys, param(e.key))
			}
		}
		if len(valueKeys) > 0 {
			q, keys := sqlGetValues, any(valueKeys)
			if len(valueKeys) == 1 {
				q, keys = sqlGetValue, valueKeys[0]
			}
			b.Queue(q, name, keys, now).Query(func(rows pgx.Rows) error {
				var (
					key     pgtype.DriverBytes
					value   []byte
					version uint64
				)
				dest := []any{&key, &value, &version} // once, not per row
				for rows.Next() {
					value = nil // a new buffer per row: each is handed over
					if err := rows.Scan(dest...); err != nil {
						return err
					}
					e, err := p.found(key)
					if err != nil {
						return err
					}
					if value == nil {
						value = []byte{} // a present empty value is not nil
					}
					e.found, e.value, e.version = true, value, version
				}
				return rows.Err()
			})
		}
		if len(hasKeys) > 0 {
			q, keys := sqlHasKeys, any(hasKeys)
			if len(hasKeys) == 1 {
				q, keys = sqlHasKey, hasKeys[0]
			}
			b.Queue(q, name, keys, now).Query(func(rows pgx.Rows) error {
				var key pgtype.DriverBytes
				dest := []any{&key}
				for rows.Next() {
					if err := rows.Scan(dest...); err != nil {
						return err
					}
					e, err := p.found(key)
					if err != nil {
						return err
					}
					e.found = true
				}
				return rows.Err()
			})
		}
	}
}

// found returns the entry of a key the database returned.
func (p *readProject) found(key []byte) (*readKey, error) {
	i, ok := p.index[string(key)]
	if !ok {
		return nil, fmt.Errorf("read: the database returned key %q, which was not asked for", key)
	}
	return &p.keys[i], nil
}

// List returns a page of live entries in key order. See store.Store.
func (s *Store) List(ctx context.Context, project string, opts store.ListOptions) (store.Page, error) {
	if err := checkProject(project); err != nil {
		return store.Page{}, err
	}
	if err := s.ready(ctx); err != nil {
		return store.Page{}, err
	}
	limit := opts.Limit
	if limit <= 0 || limit > store.MaxListLimit {
		limit = store.MaxListLimit
	}
	after, prefix := []byte(opts.After), []byte(opts.Prefix)
	now := s.nowArg()
	ctx, cancel := context.WithTimeout(ctx, s.cfg.StatementTimeout)
	defer cancel()
	var page store.Page
	err := s.twice(ctx, func(q querier) error {
		page = store.Page{}
		var rows pgx.Rows
		var err error
		if upper := prefixEnd(prefix); upper != nil {
			rows, err = q.Query(ctx, sqlListRange, project, after, prefix, upper, opts.Values, now, limit+1)
		} else {
			rows, err = q.Query(ctx, sqlListFrom, project, after, prefix, opts.Values, now, limit+1)
		}
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var (
				key     []byte
				e       store.Entry
				expires *time.Time
			)
			if err := rows.Scan(&key, &e.Size, &e.Value, &expires, &e.Version); err != nil {
				return err
			}
			if len(page.Entries) == limit {
				page.More = true
				break
			}
			e.Key = string(key)
			if opts.Values && e.Value == nil {
				e.Value = []byte{}
			}
			e.Expires = entryExpiry(expires)
			page.Entries = append(page.Entries, e)
		}
		return rows.Err()
	})
	if err != nil {
		return store.Page{}, dbError(err)
	}
	return page, nil
}

// prefixEnd returns the least byte string greater than every string that
// starts with prefix, or nil when there is none (prefix is empty or all
// 0xff).
func prefixEnd(prefix []byte) []byte {
	end := bytes.Clone(prefix)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}

// Usage returns the project's live usage and quota: what its stored rows
// use, less what its expired but not yet swept rows use.
func (s *Store) Usage(ctx context.Context, project string) (store.Usage, error) {
	if err := checkProject(project); err != nil {
		return store.Usage{}, err
	}
	if err := s.ready(ctx); err != nil {
		return store.Usage{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.StatementTimeout)
	defer cancel()
	var u store.Usage
	var expiredBytes, expiredEntries int64
	err := s.twice(ctx, func(q querier) error {
		return q.QueryRow(ctx, sqlUsage, project, s.nowArg()).Scan(&u.Bytes, &u.Entries, &u.Quota, &expiredBytes, &expiredEntries)
	})
	if err != nil {
		return store.Usage{}, dbError(err)
	}
	u.Bytes -= expiredBytes
	u.Entries -= expiredEntries
	return u, nil
}
