package pebble

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// reserveRetry is how often the committer tries to take the disk reserve
// back while it is released: each try is a fallocate that fails at once
// while the disk stays full, and once a second notices soon enough that an
// operator freed space.
const reserveRetry = time.Second

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
type reserve struct {
	path string
	size int64 // 0: no reserve is kept
	held bool  // the file holds size bytes of allocated space
	// next is the earliest time the committer tries to take the reserve
	// back after it was released or could not be made.
	next time.Time
}

// take creates the reserve file with its space allocated, unless it is held
// already. It fails, leaving no file, when the disk has not that much room.
func (r *reserve) take(now time.Time) error {
	if r.held || r.size == 0 {
		return nil
	}
	r.next = now.Add(reserveRetry)
	tmp := r.path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("create the disk reserve: %w", err)
	}
	err = unix.Fallocate(int(f.Fd()), 0, 0, r.size)
	if errors.Is(err, unix.EOPNOTSUPP) {
		err = writeZeros(f, r.size) // a filesystem without fallocate
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, r.path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		err = fmt.Errorf("allocate the disk reserve of %d bytes: %w", r.size, err)
		if !noSpace(err) {
			// Not a full disk but a reserve this filesystem cannot keep:
			// go without one rather than refuse writes for want of it.
			r.size = 0
			return fmt.Errorf("%w; going on without a disk reserve", err)
		}
		return err
	}
	r.held = true
	return nil
}

// writeZeros allocates size bytes of f by writing them.
func writeZeros(f *os.File, size int64) error {
	buf := make([]byte, 1<<20)
	for n := int64(0); n < size; n += int64(len(buf)) {
		if _, err := f.Write(buf[:min(int64(len(buf)), size-n)]); err != nil {
			return err
		}
	}
	return nil
}

// release removes the reserve file, giving its space to the store.
func (r *reserve) release(now time.Time) error {
	if !r.held {
		return nil
	}
	r.held = false
	r.next = now.Add(reserveRetry)
	if err := os.Remove(r.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("release the disk reserve: %w", err)
	}
	return nil
}

// noSpace reports whether err means the disk (or the process's file size
// limit, or a quota) has no room for what was written.
func noSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) || errors.Is(err, syscall.EFBIG)
}
