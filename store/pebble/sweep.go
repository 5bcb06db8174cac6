package pebble

import (
	"container/heap"
	"context"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// sweepLoop is the sweeper goroutine: every interval it sweeps batch after
// batch until a batch comes back short, so a backlog is cleared in one round
// while each batch stays a short write. It ends when ctx is cancelled (by
// Close).
func (s *Store) sweepLoop(ctx context.Context, interval time.Duration) {
	defer close(s.sweeperDone)
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		for ctx.Err() == nil {
			n, err := s.Sweep(ctx)
			if err != nil {
				if ctx.Err() == nil {
					s.cfg.Logger.Warn("pebble: sweep failed", zap.Error(err))
				}
				break
			}
			if n < int64(s.cfg.SweepBatch) {
				break
			}
		}
	}
}

// unknownDue is the due time of a project whose earliest expiry the
// committer does not know (after Open: a store opened, migrated or written
// by an earlier process): due at once, so the first sweeps look.
const unknownDue = 1

// sweepVisits bounds the projects one sweep request visits, each visit one
// seek into the project's expiry index, so that a sweep holds the
// committer — and every project's writes behind it — for a bounded time
// however many projects are due; Sweep goes on in the next request.
const sweepVisits = 128

// dueIndex is the committer's knowledge of when each project may next have
// an expired entry: a lower bound on its earliest expiry. A Set with a TTL
// lowers it; a purge learns the project's true next expiry from the index;
// a delete or an overwrite leaves it (still a lower bound: the sweep that
// finds nothing due learns the true one). A project absent from soon has no
// entry that expires. Only the committer (and Open, before it starts)
// touches it.
type dueIndex struct {
	soon map[string]int64
	// heap orders the projects of soon by due time, each at most once: a
	// changed due time moves the project's entry, so the heap never holds
	// more entries than soon does and never needs rebuilding. A project
	// a sweep popped is out of the heap until its batch commits (and is
	// queued again with what the sweep learned) or is dropped (and is
	// queued again as it was).
	heap dueHeap
	// visits counts the projects sweeps have visited (for tests).
	visits atomic.Int64
}

type dueEntry struct {
	at   int64
	name string
}

// set makes at (0: nothing expires) the project's due time and queues it.
func (d *dueIndex) set(name string, at int64) {
	if at == 0 {
		delete(d.soon, name)
		if i, ok := d.heap.pos[name]; ok {
			heap.Remove(&d.heap, i)
		}
		return
	}
	d.soon[name] = at
	if i, ok := d.heap.pos[name]; ok {
		d.heap.items[i].at = at
		heap.Fix(&d.heap, i)
		return
	}
	heap.Push(&d.heap, dueEntry{at, name})
}

// popDue removes and returns the entry that is due first, if it is due at
// now.
func (d *dueIndex) popDue(now int64) (dueEntry, bool) {
	if len(d.heap.items) == 0 || d.heap.items[0].at > now {
		return dueEntry{}, false
	}
	return heap.Pop(&d.heap).(dueEntry), true
}

// restore queues again the projects a batch popped but did not commit, at
// their due times.
func (d *dueIndex) restore(entries []dueEntry) {
	for _, e := range entries {
		if at, ok := d.soon[e.name]; ok {
			d.set(e.name, at)
		}
	}
}

// dueHeap is a min-heap of due entries that knows where each project's
// entry is (pos), so that a changed due time moves it in place.
type dueHeap struct {
	items []dueEntry
	pos   map[string]int
}

func (h *dueHeap) Len() int           { return len(h.items) }
func (h *dueHeap) Less(i, j int) bool { return h.items[i].at < h.items[j].at }
func (h *dueHeap) Swap(i, j int) {
	h.items[i], h.items[j] = h.items[j], h.items[i]
	h.pos[h.items[i].name] = i
	h.pos[h.items[j].name] = j
}

func (h *dueHeap) Push(x any) {
	e := x.(dueEntry)
	if h.pos == nil {
		h.pos = make(map[string]int)
	}
	h.pos[e.name] = len(h.items)
	h.items = append(h.items, e)
}

func (h *dueHeap) Pop() any {
	e := h.items[len(h.items)-1]
	h.items = h.items[:len(h.items)-1]
	delete(h.pos, e.name)
	return e
}

// minExpiry is the earlier of two expiries, 0 meaning none.
func minExpiry(a, b int64) int64 {
	if a == 0 || (b != 0 && b < a) {
		return b
	}
	return a
}

// sweepShares is how many projects at least share one Sweep: a project
// removes at most SweepBatch/sweepShares of its expired entries in one sweep
// request, so that one project's large backlog, due first, does not hold
// back the cleanup of every other project due.
const sweepShares = 4

// sweep deletes up to limit expired entries, visiting up to visits
// projects, those due first, each removing at most its share
// (Config.SweepBatch/sweepShares). A project left with expired entries at
// its share is queued again as due now, behind the projects already due,
// so that each due project gets its turn before it goes on. more reports
// that it stopped at a bound, so that more may be due.
func (w *writeTx) sweep(limit, visits int) (removed int64, more bool, err error) {
	share := max(1, w.s.cfg.SweepBatch/sweepShares)
	var capped bool // a project stopped at its share with more due
	for v := 0; v < visits; {
		if removed >= int64(limit) {
			return removed, true, nil
		}
		e, ok := w.s.due.popDue(w.now)
		if !ok {
			return removed, capped, nil
		}
		w.popped = append(w.popped, e)
		p := w.project(e.name)
		p.visited = true
		v++
		w.s.due.visits.Add(1)
		n, err := p.purge(min(share, limit-int(removed)))
		if err != nil {
			return 0, false, err
		}
		removed += n
		if n == int64(share) && p.due() {
			// Still due: its earliest expiry has passed, so any time
			// from now on is a lower bound on it that queues the project
			// behind those due before now.
			p.soon = w.now
			capped = true
		}
	}
	return removed, true, nil
}
