//go:build !cgo || race

package admin_test

// pebbleOffHeap is set where Pebble keeps its memtables and block cache off
// the Go heap: built with cgo (C allocations), without the race detector
// (whose build turns on Pebble's invariant checks, which allocate the cache
// on the Go heap).
const pebbleOffHeap = false
