package postgres

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

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
		Apply:            func(calls []*readCall) { s.readRound(calls, false) },
		ApplyHere:        func(calls []*readCall) { s.readRound(calls, true) },
		Notify:           s.notifyRead,
		Logger:           s.log,
		Second:           s.cfg.SecondReadRound,
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
	// The round's statements, their descriptions and parameters.
	stmts      []readStmt
	sds        []*pgconn.StatementDescription
	param      [3][]byte
	projectBuf []byte
	now        []byte // the clock parameter: nil (NULL) or nowBuf
	nowBuf     []byte
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
	clear(sc.stmts)
	sc.stmts = sc.stmts[:0]
	clear(sc.sds)
	sc.sds = sc.sds[:0]
	sc.param = [3][]byte{}
	sc.values = sc.values[:0]
	if cap(sc.values) > readScratchValues {
		sc.values = nil
	}
}

// keyArray is a statement's keys as a bytea[] parameter in PostgreSQL's
// binary format, built as keys are added into one buffer reused from round
// to round: the header (one dimension, no NULLs, element type bytea, the
// dimension's length and lower bound), then each key's length and bytes.
// A statement of one key takes that key alone (one).
type keyArray struct {
	enc []byte
	n   int
}

// keyArrayHeader is the size of a one-dimensional array's header.
const keyArrayHeader = 20

func (a *keyArray) add(key string) {
	if a.n == 0 {
		a.enc = append(a.enc[:0], make([]byte, keyArrayHeader)...)
	}
	a.enc = binary.BigEndian.AppendUint32(a.enc, uint32(len(key)))
	a.enc = append(a.enc, key...)
	a.n++
}

// array returns the keys as a bytea[] parameter.
func (a *keyArray) array() []byte {
	h := a.enc[:keyArrayHeader]
	binary.BigEndian.PutUint32(h[0:], 1)  // dimensions
	binary.BigEndian.PutUint32(h[4:], 0)  // no NULLs
	binary.BigEndian.PutUint32(h[8:], 17) // bytea
	binary.BigEndian.PutUint32(h[12:], uint32(a.n))
	binary.BigEndian.PutUint32(h[16:], 1) // lower bound
	return a.enc
}

// one returns the only key, as a bytea parameter.
func (a *keyArray) one() []byte { return a.enc[keyArrayHeader+4:] }

// reset empties a; its buffer is kept unless a round of large keys grew it
// (keys are at most a few KiB, rounds a few hundred keys).
func (a *keyArray) reset() {
	a.enc, a.n = a.enc[:0], 0
	if cap(a.enc) > readScratchValues {
		a.enc = nil
	}
}

// readStmt is one statement of a read round: a project's keys whose values
// are wanted, or those only tested.
type readStmt struct {
	p      *readProject
	values bool
}

// The read statements, prepared once per connection under these names.
const (
	stmtGetValue  = "kvsidecar_get_value"
	stmtGetValues = "kvsidecar_get_values"
	stmtHasKey    = "kvsidecar_has_key"
	stmtHasKeys   = "kvsidecar_has_keys"
)

// A read statement's parameters: the project as text, the key (bytea) or
// keys (bytea[]) and the clock (timestamptz) in the binary format; its
// columns, all in the binary format.
var (
	readParamFormats  = []int16{0, 1, 1}
	readResultFormats = []int16{1}
)

// readRound answers a round of reads with one round trip: per project, one
// statement for the keys whose values are wanted and one for the keys only
// tested. here says the round is one that Do runs on its caller's goroutine
// (the lone caller's): it waits for the answer in the kernel (waitConn).
func (s *Store) readRound(calls []*readCall, here bool) {
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
	sc.plan(s.cfg.Now)

	limit := s.roundLimit(calls)
	rc := s.takeReadConn()
	defer rc.busy.Store(false)
	err := s.sendReads(rc, sc, limit, false, here)
	// Reads are safe to run again, on a checked connection. A check can
	// pass on a connection the server has ended whose last frame has not
	// come yet (a read of 1 ms); each failed attempt drops its connection,
	// so that at most the pool's connections fail so.
	for range s.cfg.MaxConns {
		if !readLost(err) {
			break
		}
		sc.forget()
		err = s.sendReads(rc, sc, limit, true, here)
	}
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

// roundLimit bounds a read round: by the statement timeout, and by the
// latest deadline of its calls when every one has one (reads of Do), since
// past it nobody waits for the answer. A round that its submitter applies
// itself (Do) thus holds the submitter for no longer than its ops' time.
func (s *Store) roundLimit(calls []*readCall) time.Time {
	limit := time.Now().Add(s.cfg.StatementTimeout)
	if d := batch.Deadline(calls); !d.IsZero() && d.Before(limit) {
		limit = d
	}
	return limit
}

// readConn is the connection the reader keeps from round to round, out of
// the pool: a round then costs no acquire and release, and no context — it
// is bounded by the connection's deadline, set to the round's limit, which
// a round that overruns it meets on the socket (the driver then closes the
// connection). It goes back to the pool when it broke, for a retry, and
// once it has been kept for readConnHold, so that the pool's lifetime and
// health rules still apply to it. Only the round being applied touches it.
type readConn struct {
	busy  atomic.Bool // a round holds it
	conn  *pgxpool.Conn
	since time.Time
}

// takeReadConn returns a reader's connection no other round holds: there
// are as many as rounds in flight (Config.SecondReadRound).
func (s *Store) takeReadConn() *readConn {
	for {
		for i := range s.readConns {
			if rc := &s.readConns[i]; rc.busy.CompareAndSwap(false, true) {
				return rc
			}
		}
	}
}

// readConnHold is how long the reader keeps a connection out of the pool.
const readConnHold = time.Minute

// get returns the round's connection: the one kept, or one acquired within
// limit (a checked one for a retry).
func (rc *readConn) get(s *Store, limit time.Time, retry bool) (*pgx.Conn, error) {
	if rc.conn != nil && (retry || rc.conn.Conn().IsClosed() || time.Since(rc.since) > readConnHold) {
		rc.release()
	}
	if rc.conn == nil {
		ctx, cancel := context.WithDeadline(context.Background(), limit)
		defer cancel()
		conn, err := s.acquire(ctx, retry)
		if err != nil {
			return nil, err
		}
		rc.conn, rc.since = conn, time.Now()
	}
	return rc.conn.Conn(), nil
}

// release gives the kept connection back to the pool, without a deadline.
func (rc *readConn) release() {
	if rc.conn == nil {
		return
	}
	// A connection pgconn is closing keeps the deadline its close set, so
	// that the close's drain of the socket stays bounded.
	if !rc.conn.Conn().IsClosed() {
		_ = rc.conn.Conn().PgConn().Conn().SetDeadline(time.Time{})
	}
	rc.conn.Release()
	rc.conn = nil
}

// plan lists the round's statements and builds their key parameters: per
// project, one for the keys whose values are wanted and one for those only
// tested. now is Config.Now.
func (sc *readScratch) plan(now func() time.Time) {
	sc.stmts = sc.stmts[:0]
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
		if p.valueKeys.n > 0 {
			sc.stmts = append(sc.stmts, readStmt{p: p, values: true})
		}
		if p.hasKeys.n > 0 {
			sc.stmts = append(sc.stmts, readStmt{p: p})
		}
	}
	sc.now = nil // NULL: the database's clock
	if now != nil {
		// timestamptz in the binary format: microseconds since 2000-01-01 UTC.
		sc.nowBuf = binary.BigEndian.AppendUint64(sc.nowBuf[:0], uint64(now().UnixMicro()-pgEpochMicros))
		sc.now = sc.nowBuf
	}
}

// pgEpochMicros is 2000-01-01 00:00:00 UTC, PostgreSQL's epoch, in
// microseconds since the Unix epoch.
const pgEpochMicros = 946684800 * 1000000

// params returns the parameters of st, in sc.params.
func (sc *readScratch) params(st readStmt) [][]byte {
	keys := &st.p.hasKeys
	if st.values {
		keys = &st.p.valueKeys
	}
	var k []byte
	if keys.n == 1 {
		k = keys.one()
	} else {
		k = keys.array()
	}
	sc.projectBuf = append(sc.projectBuf[:0], st.p.name...)
	sc.param = [3][]byte{sc.projectBuf, k, sc.now}
	return sc.param[:]
}

// sendReads runs the round's statements on rc's connection, or on a
// checked one for a retry, within limit, and takes their rows into sc;
// wait says to wait for the answer in poll(2) (waitConn).
func (s *Store) sendReads(rc *readConn, sc *readScratch, limit time.Time, retry, wait bool) error {
	c, err := rc.get(s, limit, retry)
	if err != nil {
		return err
	}
	if err := c.PgConn().Conn().SetDeadline(limit); err != nil {
		rc.release()
		return fmt.Errorf("read: set the connection's deadline: %w", err)
	}
	if !wait {
		return sc.run(c)
	}
	w, _ := c.PgConn().Conn().(*waitConn)
	w.arm(limit)
	err = sc.run(c)
	w.disarm()
	return err
}

// run runs the round's statements on c, in one round trip: prepared
// statements (prepared on c's first round), parameters and rows in the
// binary format, read raw from the driver's buffer (the values copied into
// sc.values): no per-key work beyond the bytes themselves.
func (sc *readScratch) run(c *pgx.Conn) error {
	ctx := context.Background() // the connection's deadline bounds the round
	if len(sc.stmts) == 0 {
		return nil
	}
	sds := sc.sds[:0]
	for _, st := range sc.stmts {
		sd, err := prepareRead(ctx, c, st)
		if err != nil {
			return err
		}
		sds = append(sds, sd)
	}
	sc.sds = sds
	pg := c.PgConn()
	if len(sc.stmts) == 1 {
		st := sc.stmts[0]
		rr := pg.ExecStatement(ctx, sds[0], sc.params(st), readParamFormats, readResultFormats)
		return sc.take(st, rr)
	}
	b := &pgconn.Batch{}
	for i, st := range sc.stmts {
		b.ExecStatement(sds[i], sc.params(st), readParamFormats, readResultFormats)
	}
	mrr := pg.ExecBatch(ctx, b)
	i := 0
	for ; mrr.NextResult(); i++ {
		if i >= len(sc.stmts) {
			_ = mrr.Close()
			return fmt.Errorf("read: more results than the round's %d statements", len(sc.stmts))
		}
		if err := sc.take(sc.stmts[i], mrr.ResultReader()); err != nil {
			_ = mrr.Close()
			return err
		}
	}
	if err := mrr.Close(); err != nil {
		return err
	}
	if i != len(sc.stmts) {
		// Keys of the missing statements would be answered "not found".
		return fmt.Errorf("read: %d results for the round's %d statements", i, len(sc.stmts))
	}
	return nil
}

// prepareRead returns st's statement, prepared on c. pgx keeps what it
// prepared per connection, so after c's first round this is a map lookup.
func prepareRead(ctx context.Context, c *pgx.Conn, st readStmt) (*pgconn.StatementDescription, error) {
	keys := &st.p.hasKeys
	name, sql := stmtHasKeys, sqlHasKeys
	if st.values {
		keys = &st.p.valueKeys
		name, sql = stmtGetValues, sqlGetValues
	}
	if keys.n == 1 {
		name, sql = stmtHasKey, sqlHasKey
		if st.values {
			name, sql = stmtGetValue, sqlGetValue
		}
	}
	sd, err := c.Prepare(ctx, name, sql)
	if err != nil {
		return nil, fmt.Errorf("read: prepare %s: %w", name, err)
	}
	return sd, nil
}

// take reads the rows of st's statement from rr and closes it: for the
// values wanted, key, value and version (sqlGetValue(s)); for keys only
// tested, the keys that are live (sqlHasKey(s)).
func (sc *readScratch) take(st readStmt, rr *pgconn.ResultReader) error {
	err := sc.rows(st, rr)
	if _, cerr := rr.Close(); err == nil {
		err = cerr
	}
	return err
}

func (sc *readScratch) rows(st readStmt, rr *pgconn.ResultReader) error {
	want := 1
	if st.values {
		want = 3
	}
	for first := true; rr.NextRow(); first = false {
		if first {
			if err := binaryColumns(rr.FieldDescriptions(), want); err != nil {
				return err
			}
		}
		raw := rr.Values()
		e, err := st.p.found(raw[0])
		if err != nil {
			return err
		}
		e.found = true
		if !st.values {
			continue
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
		e.value, e.version = value, binary.BigEndian.Uint64(raw[2])
	}
	return nil
}

// binaryColumns checks that a result has n columns, all in the binary
// format, which the raw reads above decode. It is called once a row has
// come.
func binaryColumns(fields []pgconn.FieldDescription, n int) error {
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
