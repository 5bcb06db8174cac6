package sidecar

import "sync"

// orderer keeps the requests of one connection that name the same key in
// the order they were read, while letting requests on other keys run
// concurrently. A clear is a barrier: it waits for every request read
// before it, and every request read after it waits for it. Requests that
// name no key (list, usage, ping) are ordered only against clears.
//
// register and enter are called by the connection's read loop, in read
// order; finish is called when the request has finished. A request that
// nothing is ordered before (enter) takes no channel: a ticket's done
// channel is made only when a later request has to wait for it.
type orderer struct {
	mu      sync.Mutex
	last    map[string]*ticket   // the latest request on each key
	keyless map[*ticket]struct{} // running requests that name no key
	barrier *ticket              // the latest clear still running
}

// ticket is what a request holds between register (or enter) and finish.
type ticket struct {
	keys    []string
	one     [1]string // keys' backing array for a single-key request
	barrier bool
	wait    []chan struct{}
	done    chan struct{} // made by the first request that waits for this one; under orderer.mu
}

// doneChan is the channel closed when t finishes; o.mu is held.
func (t *ticket) doneChan() chan struct{} {
	if t.done == nil {
		t.done = make(chan struct{})
	}
	return t.done
}

func (o *orderer) init() {
	if o.last == nil {
		o.last = make(map[string]*ticket)
		o.keyless = make(map[*ticket]struct{})
	}
}

// enter registers t, a request on key alone, if no request read before it
// is still unfinished on key and no clear is pending: then it may run at
// once and takes no channel. Otherwise it registers nothing and returns
// false; the request is then registered with register and waits.
func (o *orderer) enter(key string, t *ticket) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.init()
	if o.barrier != nil {
		return false
	}
	if _, busy := o.last[key]; busy {
		return false
	}
	t.one[0] = key
	t.keys, t.barrier, t.wait, t.done = t.one[:], false, t.wait[:0], nil
	o.last[key] = t
	return true
}

// pingMayRun reports whether a request that names no key may be answered
// at once, without registering: no clear is pending.
func (o *orderer) pingMayRun() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.barrier == nil
}

func (o *orderer) register(keys []string, barrier bool) *ticket {
	t := &ticket{keys: keys, barrier: barrier}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.init()
	if o.barrier != nil {
		t.wait = append(t.wait, o.barrier.doneChan())
	}
	if barrier {
		for _, prev := range o.last {
			t.wait = append(t.wait, prev.doneChan())
		}
		for prev := range o.keyless {
			t.wait = append(t.wait, prev.doneChan())
		}
		o.barrier = t
		return t
	}
	if len(keys) == 0 {
		o.keyless[t] = struct{}{}
		return t
	}
	for _, k := range keys {
		if prev, ok := o.last[k]; ok && prev != t {
			t.wait = append(t.wait, prev.doneChan())
		}
		o.last[k] = t
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

// finish ends t: requests waiting for it may run. A ticket given to enter
// may be reused once finish has returned.
func (o *orderer) finish(t *ticket) {
	if t == nil {
		return
	}
	o.mu.Lock()
	for _, k := range t.keys {
		if o.last[k] == t {
			delete(o.last, k)
		}
	}
	if t.barrier && o.barrier == t {
		o.barrier = nil
	}
	if !t.barrier && len(t.keys) == 0 {
		delete(o.keyless, t)
	}
	done := t.done
	t.done = nil
	o.mu.Unlock()
	if done != nil {
		close(done)
	}
}
