package bolt

import "github.com/kvsidecar/kvsidecar/store/internal/diskreserve"

// reserve is the disk reserve: a file of preallocated space next to the
// store's file (Config.DiskReserve). A bbolt transaction writes new pages
// even to delete (copy on write), so on a full disk a Delete would fail like
// every other write. When a write that frees space (Delete, DeleteMany,
// Clear, Sweep) fails for want of space, the committer removes this file
// and runs it again in the room that makes; writes that add data are then
// refused while the file's own free pages are short (see Store.admit), so
// that deletes keep finding room until the reserve is taken back.
//
// It is touched only by the committer goroutine, and by Open before the
// committer starts.
type reserve = diskreserve.Reserve

// noSpace reports whether err means the disk (or the process's file size
// limit, or a quota) has no room for what was written.
func noSpace(err error) bool { return diskreserve.NoSpace(err) }
