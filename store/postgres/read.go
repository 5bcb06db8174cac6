package postgres

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
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
	// entry is what the round found for the key of a read of Do, looked
	// up before any op of the round is answered (readRound).
	entry *readKey
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
	name  string
	index map[string]int // key → its position in keys
	keys  []readKey
	// The statements' key parameters, reused from round to round.
	valueKeys, hasKeys keyArray
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

// ask adds key to the round, once; values says a caller wants its value.
func (p *readProject) ask(key string, values bool) {
	i, ok := p.index[key]
	if !ok {
		i = len(p.keys)
		p.index[key] = i
		p.keys = append(p.keys, readKey{key: key})
	}
	if values {
		p.keys[i].values = true
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

// readScratch is what a read round works in: its projects, the keys as
// parameters and the values read. It is kept from round to round
// (readScratchPool), so that in steady state a round allocates nothing per
// key beyond the values it hands to waiting callers, who own them.
type readScratch struct {
	projects []*readProject // in the order the round first names them
	byName   map[string]*readProject
	spare    []*readProject // kept from earlier rounds, for the next projects
	// values holds the values of the round's rows: the driver's buffer is
	// reused from row to row, so each is copied here once. A read of Do
	// (whose Done only reads its value) is given its slice of it; a
	// waiting caller gets a copy of its own.
	values []byte
}

// Bounds of what a readScratch keeps for the next round. A round reads at
// most Config.MaxBatch keys (256 by default): 256 KiB holds such a round
// of 1 KiB values; a larger one grows its buffer and the buffer is then
// dropped, so that one round of large values does not pin its memory.
// Projects beyond readScratchProjects (a round names one per tenant with
// reads queued) are dropped likewise.
const (
	readScratchValues   = 256 << 10
	readScratchProjects = 64
)

// readScratchPool keeps read rounds' scratch. A pool, not a field of the
// Store: it stays correct should rounds ever overlap.
var readScratchPool = sync.Pool{New: func() any {
	return &readScratch{byName: map[string]*readProject{}}
}}

// project returns the round's part for the project name, adding it.
func (sc *readScratch) project(name string) *readProject {
	if n := len(sc.projects); n > 0 && sc.projects[n-1].name == name {
		return sc.projects[n-1] // the common case: one project's reads
	}
	if p := sc.byName[name]; p != nil {
		return p
	}
	var p *readProject
	if n := len(sc.spare); n > 0 {
		p = sc.spare[n-1]
		sc.spare[n-1] = nil
		sc.spare = sc.spare[:n-1]
	} else {
		p = &readProject{index: map[string]int{}}
	}
	p.name = name
	sc.byName[name] = p
	sc.projects = append(sc.projects, p)
	return p
}

// forget drops what a round trip found, before it is run again.
func (sc *readScratch) forget() {
	for _, p := range sc.projects {
		for i := range p.keys {
			e := &p.keys[i]
			e.found, e.value, e.version = false, nil, 0
		}
	}
	sc.values = sc.values[:0]
}

// reset empties sc for the next round, keeping its memory within the
// bounds above; it holds no key or value of the round after it.
func (sc *readScratch) reset() {
	for _, p := range sc.projects {
		clear(p.index)
		clear(p.keys)
		p.keys = p.keys[:0]
		p.valueKeys.reset()
		p.hasKeys.reset()
		p.name = ""
		if len(sc.spare) < readScratchProjects {
			sc.spare = append(sc.spare, p)
		}
	}
	clear(sc.projects)
	sc.projects = sc.projects[:0]
	clear(sc.byName)
	sc.values = sc.values[:0]
	if cap(sc.values) > readScratchValues {
		sc.values = nil
	}
}

// keyArray is keys as a bytea[] parameter that pgx encodes without
// reflection and without an allocation per key (pgtype.ArrayGetter, each
// element a keyParam).
type keyArray struct {
	buf  []byte   // the keys, one after the other
	keys [][]byte // each key, in buf
	dims [1]pgtype.ArrayDimension
}

func (a *keyArray) add(key string) {
	start := len(a.buf)
	a.buf = append(a.buf, key...)
	a.keys = append(a.keys, a.buf[start:len(a.buf):len(a.buf)])
}

// reset empties a; its buffers are kept unless a round of large keys grew
// them (keys are at most a few KiB, rounds a few hundred keys).
func (a *keyArray) reset() {
	clear(a.keys)
	a.keys = a.keys[:0]
	a.buf = a.buf[:0]
	if cap(a.buf) > readScratchValues {
		a.buf, a.keys = nil, nil
	}
}

func (a *keyArray) Dimensions() []pgtype.ArrayDimension {
	a.dims[0] = pgtype.ArrayDimension{Length: int32(len(a.keys)), LowerBound: 1}
	return a.dims[:]
}

func (a *keyArray) Index(i int) any { return keyParam{&a.keys[i]} }

func (a *keyArray) IndexType() any { return keyParam{} }

// keyParam is one key as a bytea parameter. It holds a pointer only, so
// that passing it as an interface allocates nothing.
type keyParam struct{ b *[]byte }

func (k keyParam) BytesValue() ([]byte, error) { return *k.b, nil }

// readRound answers a round of reads with one pipelined round trip: per
// project, one statement for the keys whose values are wanted and one for
// the keys only tested.
func (s *Store) readRound(calls []*readCall) {
	sc := readScratchPool.Get().(*readScratch)
	defer func() {
		sc.reset()
		readScratchPool.Put(sc)
	}()
	for _, c := range calls {
		r := &c.Item
		p := sc.project(r.project)
		for _, k := range r.keys {
			p.ask(k, r.values)
		}
	}

	now := s.nowArg()
	round := func() *pgx.Batch {
		b := &pgx.Batch{}
		s.queueReads(b, sc, now)
		return b
	}
	ctx, cancel := s.roundContext(calls)
	err := s.pool.SendBatch(ctx, round()).Close()
	if connLost(err) {
		// Reads are safe to run again: once, on a checked connection.
		sc.forget()
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

	// Every lookup is done before the first read of Do is answered: once
	// its Done has run, an op's key is its caller's again and may hold
	// other bytes (the daemon reads the next frame into its buffer), while
	// the round's index still holds it as a map key, so that a later
	// lookup of the same key would miss it.
	for _, c := range calls {
		r := &c.Item
		p := sc.project(r.project)
		if r.async != nil {
			r.entry = p.entry(r.one[0])
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
				// The caller owns what it is given; the round's buffer
				// is the next round's.
				res.values[i] = append([]byte{}, e.value...)
				res.versions[i] = e.version
			}
		}
		c.Answer(res)
	}
	for _, c := range calls {
		if c.Item.async != nil {
			answerOp(c)
		}
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
// rows are read from the driver's buffer (RawValues), the values copied
// into sc.values: a round allocates nothing per key or row. The callbacks
// fill in each project's keys.
func (s *Store) queueReads(b *pgx.Batch, sc *readScratch, now any) {
	for _, p := range sc.projects {
		p.valueKeys.reset()
		p.hasKeys.reset()
		for _, e := range p.keys {
			if e.values {
				p.valueKeys.add(e.key)
			} else {
				p.hasKeys.add(e.key)
			}
		}
		if n := len(p.valueKeys.keys); n > 0 {
			q, keys := sqlGetValues, any(&p.valueKeys)
			if n == 1 {
				q, keys = sqlGetValue, keyParam{&p.valueKeys.keys[0]}
			}
			b.Queue(q, p.name, keys, now).Query(func(rows pgx.Rows) error {
				return sc.readValues(p, rows)
			})
		}
		if n := len(p.hasKeys.keys); n > 0 {
			q, keys := sqlHasKeys, any(&p.hasKeys)
			if n == 1 {
				q, keys = sqlHasKey, keyParam{&p.hasKeys.keys[0]}
			}
			b.Queue(q, p.name, keys, now).Query(func(rows pgx.Rows) error {
				return readPresence(p, rows)
			})
		}
	}
}

// readValues takes the rows of sqlGetValue(s) — key, value, version, in
// the binary format — into p's keys.
func (sc *readScratch) readValues(p *readProject, rows pgx.Rows) error {
	for first := true; rows.Next(); first = false {
		if first {
			if err := binaryColumns(rows, 3); err != nil {
				return err
			}
		}
		raw := rows.RawValues()
		e, err := p.found(raw[0])
		if err != nil {
			return err
		}
		if len(raw[2]) != 8 {
			return fmt.Errorf("read: a version of %d bytes, want 8", len(raw[2]))
		}
		start := len(sc.values)
		sc.values = append(sc.values, raw[1]...)
		value := sc.values[start:len(sc.values):len(sc.values)]
		if value == nil {
			value = []byte{} // a present empty value is not nil
		}
		e.found, e.value, e.version = true, value, binary.BigEndian.Uint64(raw[2])
	}
	return rows.Err()
}

// readPresence takes the rows of sqlHasKey(s) — the keys that are live —
// into p's keys.
func readPresence(p *readProject, rows pgx.Rows) error {
	for first := true; rows.Next(); first = false {
		if first {
			if err := binaryColumns(rows, 1); err != nil {
				return err
			}
		}
		e, err := p.found(rows.RawValues()[0])
		if err != nil {
			return err
		}
		e.found = true
	}
	return rows.Err()
}

// binaryColumns checks that rows have n columns, all in the binary format
// (how pgx asks for bytea and int8 with a prepared statement), which the
// raw reads above decode. It is called once a row has come: rows that
// failed before (a lost connection) have no columns to describe.
func binaryColumns(rows pgx.Rows, n int) error {
	fields := rows.FieldDescriptions()
	if len(fields) != n {
		return fmt.Errorf("read: %d columns, want %d", len(fields), n)
	}
	for _, f := range fields {
		if f.Format != pgtype.BinaryFormatCode {
			return fmt.Errorf("read: column %s in the text format, want binary", f.Name)
		}
	}
	return nil
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
