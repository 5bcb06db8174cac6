package pebble

import "github.com/kvsidecar/kvsidecar/store/internal/diskreserve"

// reserve is the disk reserve: a file of preallocated space next to the
// store's directory (Config.DiskReserve). Pebble appends to its log even to
// delete (a tombstone), and stops the process when a log write fails, so
// the committer refuses writes that add data while the free space is short
// (Store.admit); when the disk is full all the same (another program filled
// it), the committer removes this file so that writes that free space
// (Delete, DeleteMany, Clear, Sweep) run in its room, and takes it back once
// the disk has room for it again.
//
// It is touched only by the committer goroutine, and by Open before the
// committer starts.
type reserve = diskreserve.Reserve
