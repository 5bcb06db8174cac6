package sidecar

import "sync"

// orderer keeps the requests of one connection that name the same key in
// the order they were read, while letting requests on other keys run
// concurrently. A clear is a barrier: it waits for every request read
// before it, and every request read after it waits for it. Requests that
// name no key (list, usage, ping) are ordered only against clears.
//
// register is called by the connection's read loop, in read order; done is
// called by the request's goroutine when it has finished.
type orderer struct {
	mu      sync.Mutex
	last    map[string]chan struct{}   // the latest request on each key
	keyless map[chan struct{}]struct{} // running requests that name no key
	barrier chan struct{}              // the latest clear still running
}

// ticket is what a request holds between register and done.
type ticket struct {
	keys    []string
	barrier bool
	wait    []chan struct{}
	done    chan struct{}
}

func (o *orderer) register(keys []string, barrier bool) *ticket {
	t := &ticket{keys: keys, barrier: barrier, done: make(chan struct{})}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.last == nil {
		o.last = make(map[string]chan struct{})
		o.keyless = make(map[chan struct{}]struct{})
	}
	if o.barrier != nil {
		t.wait = append(t.wait, o.barrier)
	}
	if barrier {
		for _, ch := range o.last {
			t.wait = append(t.wait, ch)
		}
		for ch := range o.keyless {
			t.wait = append(t.wait, ch)
		}
		o.barrier = t.done
		return t
	}
	if len(keys) == 0 {
		o.keyless[t.done] = struct{}{}
		return t
	}
	for _, k := range keys {
		if prev, ok := o.last[k]; ok && prev != t.done {
			t.wait = append(t.wait, prev)
		}
		o.last[k] = t.done
	}
	return t
}

// await blocks until every request the ticket is ordered after has finished.
func (t *ticket) await() {
	if t == nil {
		return
	}
	for _, ch := range t.wait {
		<-ch
	}
}

func (o *orderer) finish(t *ticket) {
	if t == nil {
		return
	}
	o.mu.Lock()
	for _, k := range t.keys {
		if o.last[k] == t.done {
			delete(o.last, k)
		}
	}
	if t.barrier && o.barrier == t.done {
		o.barrier = nil
	}
	if !t.barrier && len(t.keys) == 0 {
		delete(o.keyless, t.done)
	}
	o.mu.Unlock()
	close(t.done)
}
