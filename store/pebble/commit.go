package pebble

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/kvsidecar/kvsidecar/store"
	"github.com/kvsidecar/kvsidecar/store/internal/batch"
)

const (
	// maxBatch bounds the requests of one commit. Larger batches share one
	// fsync among more writers, but the first writer of a batch waits until
	// the last is applied; a thousand ~100-byte sets apply in well under a
	// millisecond, less than the fsync itself.
	maxBatch = 1024
	// maxBatchBytes bounds the keys and values of one commit (the first
	// request always goes in, however large), so a small write of another
	// project waits for little log writing. kvbench's noisy workload (A's
	// 256 KiB setMany calls from 32 connections) measured B's lone set at
	// 26.6 and 34.3 ms (p50) during the flood with 2 MiB, 8.7 and 10.8 ms
	// with 512 KiB, at the same rate of A's calls; a batch of small sets
	// (maxBatch of them) stays well below it.
	maxBatchBytes = 512 << 10
	// turnBytes is what one project may add to a batch in its turn of the
	// round robin (batch.Config.TurnBytes).
	turnBytes = 64 << 10
	// queueCapacity bounds the write queue: one full batch while the
	// previous one commits. Beyond that, writers wait to enqueue, where
	// their context still applies.
	queueCapacity = maxBatch
)

// request is one write call waiting for the committer.
type request struct {
	// project is the request's lane in the queue; "" for the calls of no
	// project (SetDefaultQuota, Sweep).
	project string
	// frees is set for the writes that only remove data (Delete,
	// DeleteMany, Clear, Sweep): they go on when the disk is full.
	frees bool
	// apply performs the write in w. A refusal (quota, condition, not an
	// integer) is reported in the result, after apply has decided it
	// without changing anything; an error means the batch must be dropped.
	apply func(w *writeTx) (result, error)
	// op, when set instead of apply, is a write of Do (async.go).
	op   *store.Op
	item [1]store.Item
	size int // bytes of keys and values, for maxBatchBytes
}

// run applies the request in w: see apply.
func (r *request) run(w *writeTx) (result, error) {
	if r.op != nil {
		return w.applyOp(r)
	}
	return r.apply(w)
}

// result is the answer to one request.
type result struct {
	n       int64
	flags   []bool
	version uint64 // the version a Set, SetMany, Incr or Expire wrote
	more    bool   // a sweep stopped at a bound: more may be due
	err     error
	// synced, with a pipeline (pipeline.go), is the batch the request was
	// applied in: the answer holds once the batch is done, and the batch's
	// err, if any, replaces it.
	synced *inflight
}

// writeCall is a request in the write queue.
type writeCall = batch.Call[request, result]

// errPurgeMore is the refusal of a request whose quota check deleted a
// slice of its project's expired entries and needs the next slice before it
// can decide; the committer requeues it. It never reaches a caller.
var errPurgeMore = fmt.Errorf("%w: the purge of expired entries goes on in the next batch", store.ErrUnavailable)

// newQueue returns the write queue, whose committer goroutine runs commit
// until Close.
func (s *Store) newQueue() *batch.Queue[request, result] {
	return batch.New(batch.Config[request, result]{
		Name:      "write",
		Capacity:  queueCapacity,
		Key:       func(r request) string { return r.project },
		MaxPerKey: max(int(s.cfg.ProjectQueueShare*queueCapacity), 1),
		MaxWeight: maxBatch,
		MaxBytes:  maxBatchBytes,
		Bytes:     func(r request) int { return r.size },
		TurnBytes: turnBytes,
		Apply:     s.commit,
		Notify:    notifyOp,
		Logger:    s.cfg.Logger,
	})
}

// commit applies calls in one batch and answers every one, or requeues it.
// It is the queue's Apply.
func (s *Store) commit(calls []*writeCall) {
	if s.pipe != nil {
		// Whatever happens below, the queue draws the next batch only once
		// a slot of the pipeline is free, so that what arrives meanwhile
		// joins it.
		defer s.pipe.reserve()
	}
	if err := s.writesStopped(); err != nil {
		for _, c := range calls {
			c.Fail(err)
		}
		return
	}
	now := time.Now()
	if !s.reserve.Held && s.reserve.Size > 0 && !now.Before(s.reserve.Next) {
		if free, err := s.freeSpace(); err == nil && free >= s.reserve.Size+diskHeadroom {
			switch err := s.reserve.Take(now); {
			case err == nil:
				s.cfg.Logger.Info("pebble: the disk reserve is back", zap.String("reserve", s.reserve.Path))
			case s.reserve.Size == 0: // given up: not for want of space
				s.cfg.Logger.Warn("pebble: no disk reserve", zap.Error(err))
			}
		}
	}
	s.commitBatch(s.admit(calls), map[string]bool{})
}

// commitBatch applies calls in one batch. A call whose purge of expired
// entries needs another slice is requeued, with every later call of its
// project (waiting notes the projects), so they keep their order. If the
// commit fails, each call is retried in a batch of its own so that only the
// one that cannot commit fails.
func (s *Store) commitBatch(calls []*writeCall, waiting map[string]bool) {
	if len(calls) == 0 {
		return
	}
	results := make([]result, len(calls))
	requeue := make([]bool, len(calls))
	var purging []string // projects whose calls this batch requeues
	w := s.newWriteTx()
	// A dropped batch (failed or panicked) gives back the due projects
	// its sweep took.
	defer func() { s.due.restore(w.popped) }()
	var f *inflight
	err := func() error {
		defer func() {
			if w.b != nil && w.err != nil {
				_ = w.b.Close()
			}
		}()
		for i, c := range calls {
			p := c.Item.project
			if waiting[p] || slices.Contains(purging, p) {
				requeue[i] = true
				continue
			}
			res, err := c.Item.run(w)
			if err != nil {
				w.err = err
				return err
			}
			if res.err == errPurgeMore {
				purging = append(purging, p)
				requeue[i] = true
				continue
			}
			results[i] = res
		}
		f, w.err = w.commit()
		return w.err
	}()
	if err != nil {
		s.due.restore(w.popped)
		w.popped = nil
	}
	if err == nil && s.pipe == nil {
		// No pipeline: the committer waits for the log sync itself.
		if serr := s.settle(f); serr != nil {
			for _, c := range calls {
				c.Fail(serr)
			}
			return
		}
	}
	if err == nil {
		if s.pipe != nil {
			// The batch is applied: hand it to the completer even if what
			// follows panics, so that its sync is waited for and what was
			// answered is finished.
			f.done = make(chan struct{})
			f.ops = s.pipe.opsBuf()
			defer s.pipe.handOff(f)
			for i := range results {
				results[i].synced = f
			}
		}
		s.cfg.ObserveBatch(len(calls))
		for _, p := range purging {
			waiting[p] = true
		}
		for i, c := range calls {
			if requeue[i] {
				c.Requeue()
			} else {
				c.Answer(results[i])
			}
		}
		return
	}
	if len(calls) == 1 {
		calls[0].Fail(fmt.Errorf("%w: commit: %w", store.ErrUnavailable, err))
		return
	}
	s.cfg.Logger.Warn("pebble: a batch failed to commit; retrying its writes one per batch",
		zap.Int("writes", len(calls)), zap.Error(err))
	for i := range calls {
		s.commitBatch(calls[i:i+1], waiting)
	}
}

// freeSpace is the space, in bytes, the filesystem of the store's directory
// has left for it.
func (s *Store) freeSpace() (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(s.cfg.Path, &st); err != nil {
		return 0, fmt.Errorf("read the free space of %s: %w", s.cfg.Path, err)
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}

// deleteRoom is the free space a batch of writes that only remove data
// needs: their tombstones are small log records, and a flush of them a
// small table.
const deleteRoom = 1 << 20

// admit returns the calls the committer can commit now without running the
// disk out of space, which Pebble does not survive (see the package doc),
// and fails the others with a disk-full error. Writes that add data need
// diskHeadroom and twice their data free; writes that only remove data need
// deleteRoom and twice their keys, and get the disk reserve released when
// that is short.
func (s *Store) admit(calls []*writeCall) []*writeCall {
	free, err := s.freeSpace()
	if err != nil {
		// Not knowing is not a reason to refuse: Pebble reports a write it
		// cannot make.
		s.cfg.Logger.Warn("pebble: cannot read the free disk space", zap.Error(err))
		return calls
	}
	adding, freeing := 0, 0
	for _, c := range calls {
		if c.Item.frees {
			freeing += c.Item.size
		} else {
			adding += c.Item.size
		}
	}
	if free >= diskHeadroom+2*int64(adding) {
		return calls
	}
	if freeing > 0 && free < deleteRoom+2*int64(freeing) && s.reserve.Held {
		if err := s.reserve.Release(time.Now()); err != nil {
			s.cfg.Logger.Error("pebble: the disk is full and the disk reserve could not be released", zap.Error(err))
		} else {
			s.cfg.Logger.Warn("pebble: the disk is full; released the disk reserve so that deletes go on, writes that add data are refused until there is room",
				zap.String("reserve", s.reserve.Path))
			if f, err := s.freeSpace(); err == nil {
				free = f
			}
		}
	}
	deletesFit := free >= deleteRoom+2*int64(freeing)
	kept := calls[:0:0]
	for _, c := range calls {
		if c.Item.frees && deletesFit {
			kept = append(kept, c)
		} else {
			c.Fail(diskFull())
		}
	}
	return kept
}

// diskFull is the error of a write refused because the disk is full.
func diskFull() error {
	return fmt.Errorf("%w: the embedded store's disk is full: delete entries or free disk space", store.ErrUnavailable)
}

// writeTx is one batch being built by the committer: the Pebble batch, the
// batch's view of the projects it touched, and its clock.
type writeTx struct {
	s   *Store
	b   *pebble.Batch
	now int64 // unix ms, one instant for the whole batch
	// purgeLeft is how many expired entries the quota checks of this batch
	// may still delete (Config.SweepBatch in all); a request that needs
	// more is requeued.
	purgeLeft int
	// projects holds the projects this batch's writes touched, each with
	// its state as the batch has changed it.
	projects map[string]*projectTx
	// defaultQuota is the default quota as this batch leaves it.
	defaultQuota int64
	// popped holds the entries this batch's sweep took from the due
	// index: queued again if the batch is dropped.
	popped []dueEntry
	err    error // the batch failed: dropped, not committed
}

func (s *Store) newWriteTx() *writeTx {
	return &writeTx{
		s:            s,
		b:            s.db.NewBatch(),
		now:          s.nowMs(),
		purgeLeft:    s.cfg.SweepBatch,
		defaultQuota: s.defaultQuota,
	}
}

// project returns the named project as this batch sees it.
func (w *writeTx) project(name string) *projectTx {
	if p, ok := w.projects[name]; ok {
		return p
	}
	st, stored := w.s.projects[name]
	soon := w.s.due.soon[name]
	p := &projectTx{name: name, w: w, st: st, stored: stored, soon: soon, soonWas: soon}
	if w.projects == nil {
		w.projects = make(map[string]*projectTx)
	}
	w.projects[name] = p
	return p
}

// commit writes the changed project states and applies the batch to
// Pebble without waiting for its log sync, takes the snapshot through it,
// and makes the batch's states the committer's, on which the next batch is
// built. The batch returned is settled (settle: its sync waited for, its
// snapshot made the read view) before any of its calls is answered, by the
// committer itself or, with a pipeline, by the completer (pipeline.go).
func (w *writeTx) commit() (*inflight, error) {
	for _, p := range w.projects {
		if p.dirty {
			if err := w.b.Set(projectKey(p.name), p.st.encode(), nil); err != nil {
				return nil, err
			}
		}
	}
	f := &inflight{}
	if w.b.Empty() {
		err := w.b.Close()
		w.b = nil
		if err == nil {
			// Nothing to write, but what a sweep learned holds.
			w.noteDue()
		}
		return f, err
	}
	if err := w.s.db.ApplyNoSyncWait(w.b, pebble.Sync); err != nil {
		return nil, err
	}
	w.noteDue()
	f.b, w.b = w.b, nil
	// The committer is the only writer: what the DB shows now is exactly
	// the batches up to this one.
	f.view = newSnapView(w.s.db)
	for _, p := range w.projects {
		if p.dirty {
			w.s.projects[p.name] = p.st
		}
		if p.cleared {
			w.s.recent.forgetProject(p.name)
		}
		for k, rec := range p.data {
			w.s.recent.remember(dataKey(p.name, []byte(k)), metaOf([]byte(k), rec))
		}
	}
	w.s.defaultQuota = w.defaultQuota
	return f, nil
}

// noteDue makes the due times of the projects as this batch leaves them
// the committer's: those it changed, and those its sweep visited (taken
// from the index).
func (w *writeTx) noteDue() {
	for _, p := range w.projects {
		if p.visited || p.soon != p.soonWas {
			w.s.due.set(p.name, p.soon)
		}
	}
	w.popped = nil
}

// projectTx is one project within a batch.
type projectTx struct {
	name   string
	w      *writeTx
	st     projectState
	stored bool // the project has a stored state (it exists)
	dirty  bool // st changed in this batch
	// data holds the records this batch wrote (nil: deleted), which the
	// DB does not show until the batch commits.
	data map[string][]byte
	// expDeleted holds the expiry index rows (expiry ++ key) this batch
	// deleted.
	expDeleted map[string]struct{}
	// cleared is set once a Clear ran in this batch: the DB's entries of
	// the project are gone.
	cleared bool
	// soon is a lower bound on the earliest expiry of the project's
	// entries as this batch leaves them (0: none expires; see dueIndex),
	// soonWas the committer's before the batch.
	soon, soonWas int64
	// wroteMin is the earliest expiry this batch wrote (0: none), which
	// the DB does not show until the batch commits.
	wroteMin int64
	// visited is set once this batch's sweep visited the project.
	visited bool
}

// record returns the stored record of key (nil if none), expired or not, as
// this batch leaves it.
func (p *projectTx) record(key []byte) ([]byte, error) {
	if rec, ok := p.data[string(key)]; ok {
		return rec, nil
	}
	if p.cleared || !p.stored {
		return nil, nil
	}
	v, closer, err := p.w.s.db.Get(dataKey(p.name, key))
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	rec := slices.Clone(v)
	if err := closer.Close(); err != nil {
		return nil, err
	}
	if !validRecord(rec) {
		return nil, fmt.Errorf("project %q key %q: a record of %d bytes", p.name, key, len(rec))
	}
	return rec, nil
}

// meta returns the size, expiry and version of the stored record of key,
// expired or not, as this batch leaves it: from the batch, from the
// committer's map of recent keys, or read from Pebble (and remembered).
func (p *projectTx) meta(key []byte) (recMeta, error) {
	if rec, ok := p.data[string(key)]; ok {
		return metaOf(key, rec), nil
	}
	if p.cleared || !p.stored {
		return recMeta{}, nil
	}
	dk := dataKey(p.name, key)
	if m, ok := p.w.s.recent[string(dk)]; ok {
		return m, nil
	}
	rec, err := p.record(key)
	if err != nil {
		return recMeta{}, err
	}
	m := metaOf(key, rec)
	// What Pebble holds is what the committed batches left: true whatever
	// this batch does, which its commit notes after.
	p.w.s.recent.remember(dk, m)
	return m, nil
}

// liveMeta is meta of a key that exists and has not expired; its present
// is false otherwise.
func (p *projectTx) liveMeta(key []byte) (recMeta, error) {
	m, err := p.meta(key)
	if err != nil || !m.present || expired(m.expiry, p.w.now) {
		return recMeta{}, err
	}
	return m, nil
}

// live returns the record of key if it exists and has not expired.
func (p *projectTx) live(key []byte) ([]byte, error) {
	rec, err := p.record(key)
	if err != nil || rec == nil || expired(recordExpiry(rec), p.w.now) {
		return nil, err
	}
	return rec, nil
}

// quota is the quota in force for the project.
func (p *projectTx) quota() int64 { return quotaOf(p.st, p.w.defaultQuota) }

// ensure makes the project exist.
func (p *projectTx) ensure() {
	p.stored = true
	p.dirty = true
}

// nextVersion advances the project's version counter and returns the new
// version.
func (p *projectTx) nextVersion() uint64 {
	p.st.version++
	p.dirty = true
	return p.st.version
}

func (p *projectTx) setRecord(key, rec []byte) {
	if p.data == nil {
		p.data = make(map[string][]byte)
	}
	p.data[string(key)] = rec
}

func (p *projectTx) deleteExp(expiry int64, key []byte) error {
	k := expKey(p.name, expiry, key)
	if p.expDeleted == nil {
		p.expDeleted = make(map[string]struct{})
	}
	p.expDeleted[string(k[2+len(p.name):])] = struct{}{}
	return p.w.b.Delete(k, nil)
}

// put stores value under key with the given version, replacing any record
// and its index row, and updates the usage. The project must exist.
func (p *projectTx) put(key, value []byte, expiry int64, version uint64) error {
	old, err := p.meta(key)
	if err != nil {
		return err
	}
	if old.present {
		if old.expiry != 0 {
			if err := p.deleteExp(old.expiry, key); err != nil {
				return err
			}
		}
		p.st.bytes -= old.size
		p.st.entries--
	}
	rec := encodeRecord(expiry, version, value)
	if err := p.w.b.Set(dataKey(p.name, key), rec, nil); err != nil {
		return err
	}
	p.setRecord(key, rec)
	if expiry != 0 {
		k := expKey(p.name, expiry, key)
		delete(p.expDeleted, string(k[2+len(p.name):]))
		if err := p.w.b.Set(k, nil, nil); err != nil {
			return err
		}
		p.soon = minExpiry(p.soon, expiry)
		p.wroteMin = minExpiry(p.wroteMin, expiry)
	}
	p.st.bytes += int64(len(key) + len(value))
	p.st.entries++
	p.dirty = true
	return nil
}

// remove deletes the record of key and its index row, updates the usage
// and reports whether the removed record was live.
func (p *projectTx) remove(key []byte) (wasLive bool, err error) {
	old, err := p.meta(key)
	if err != nil || !old.present {
		return false, err
	}
	expiry := old.expiry
	if expiry != 0 {
		if err := p.deleteExp(expiry, key); err != nil {
			return false, err
		}
	}
	if err := p.w.b.Delete(dataKey(p.name, key), nil); err != nil {
		return false, err
	}
	p.setRecord(key, nil)
	p.st.bytes -= old.size
	p.st.entries--
	p.dirty = true
	return !expired(expiry, p.w.now), nil
}

// forExpired calls fn for each expired entry as this batch leaves them,
// oldest expiry first, until fn returns false. An index row this batch
// wrote is never expired (every expiry it writes is after its clock), so
// the committed rows less those this batch deleted are all of them.
func (p *projectTx) forExpired(fn func(key []byte, expiry int64) (bool, error)) error {
	if p.cleared || !p.stored || !p.due() {
		return nil
	}
	dbIter := func(lower, upper []byte) (*pebble.Iterator, error) {
		return p.w.s.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	}
	base := 2 + len(p.name)
	return forExpired(dbIter, p.name, p.w.now, func(key []byte, expiry int64) (bool, error) {
		if len(p.expDeleted) > 0 {
			row := expKey(p.name, expiry, key)[base:]
			if _, gone := p.expDeleted[string(row)]; gone {
				return true, nil
			}
		}
		return fn(key, expiry)
	})
}

// hasExpired reports whether the project has an expired entry left.
func (p *projectTx) hasExpired() (bool, error) {
	found := false
	err := p.forExpired(func([]byte, int64) (bool, error) { found = true; return false, nil })
	return found, err
}

// expiredUsage is what the project's expired, not yet deleted entries count
// in its stored usage.
func (p *projectTx) expiredUsage() (entries, size int64, err error) {
	err = p.forExpired(func(key []byte, _ int64) (bool, error) {
		m, err := p.meta(key)
		if m.present {
			entries++
			size += m.size
		}
		return true, err
	})
	return entries, size, err
}

// due reports whether the project may have an expired entry: its lower
// bound on its earliest expiry has passed.
func (p *projectTx) due() bool { return p.soon != 0 && p.soon <= p.w.now }

// purge deletes up to limit expired entries (limit <= 0: all of them) and
// returns how many it deleted. The same walk of the expiry index learns the
// project's next expiry: the first row it leaves (expired or not), or the
// earliest this batch wrote, whichever is first.
func (p *projectTx) purge(limit int) (int64, error) {
	if p.cleared || !p.stored || !p.due() {
		return 0, nil
	}
	var keys [][]byte
	var next int64
	lower := projectPrefix(kindExp, p.name, 0)
	it, err := p.w.s.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: prefixEnd(lower)})
	if err != nil {
		return 0, fmt.Errorf("%w: read: %w", store.ErrUnavailable, err)
	}
	for it.First(); it.Valid(); it.Next() {
		row := it.Key()[len(lower):]
		if len(row) < 8 {
			continue
		}
		expiry := int64(binary.BigEndian.Uint64(row))
		if expiry == 0 { // never written: 0 means no expiry
			continue
		}
		if _, gone := p.expDeleted[string(row)]; gone {
			continue
		}
		if !expired(expiry, p.w.now) || (limit > 0 && len(keys) >= limit) {
			next = expiry
			break
		}
		keys = append(keys, slices.Clone(row[8:]))
	}
	if err := closeIter(it); err != nil {
		return 0, err
	}
	for _, k := range keys {
		if _, err := p.remove(k); err != nil {
			return 0, err
		}
	}
	p.soon = minExpiry(next, p.wroteMin)
	return int64(len(keys)), nil
}

// clear deletes every entry of the project with two range deletions.
func (p *projectTx) clear() error {
	for _, kind := range []byte{kindData, kindExp} {
		lower := projectPrefix(kind, p.name, 0)
		if err := p.w.b.DeleteRange(lower, prefixEnd(lower), nil); err != nil {
			return err
		}
	}
	p.data, p.expDeleted, p.cleared = nil, nil, true
	p.soon, p.wroteMin = 0, 0
	p.st.bytes, p.st.entries = 0, 0
	p.dirty = true
	return nil
}

// submit queues a write and waits for its result. ctx applies while the
// request waits to enter the queue; once queued, the write will be applied
// and submit waits for its outcome regardless of ctx, so a write whose ctx
// expires after that point may still commit.
func (s *Store) submit(ctx context.Context, r request) result {
	res, err := s.queue.Submit(ctx, r)
	if err != nil {
		return result{err: err}
	}
	if f := res.synced; f != nil {
		<-f.done
		if f.err != nil {
			return result{err: f.err}
		}
	}
	return res
}
