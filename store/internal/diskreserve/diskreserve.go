// Package diskreserve keeps the disk reserve of the embedded store: a file
// of allocated space that the store releases when the disk is full, so that
// deletes, clears and sweeps run in its room, and takes back once the disk
// has room again. What may use the room, and when writes that add data are
// refused, stays with the store.
package diskreserve

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Retry is how often a committer tries to take its reserve back while it
// is released: each try is a fallocate that fails at once while the disk
// stays full, and once a second notices soon enough that an operator freed
// space.
const Retry = time.Second

// Reserve is a file of preallocated space that a store keeps next to its
// data, to give back when the disk is full so that writes which free space
// still find room. It is not safe for concurrent use: one goroutine (a
// store's committer) owns it.
type Reserve struct {
	Path string // the reserve file
	Size int64  // 0: no reserve is kept
	Held bool   // the file holds Size bytes of allocated space
	// Next is the earliest time the owner tries to take the reserve back
	// after it was released or could not be made.
	Next time.Time
}

// Take creates the reserve file with its space allocated, unless it is held
// already. It fails, leaving no file, when the disk has not that much room.
func (r *Reserve) Take(now time.Time) error {
	if r.Held || r.Size == 0 {
		return nil
	}
	r.Next = now.Add(Retry)
	tmp := r.Path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("create the disk reserve: %w", err)
	}
	err = unix.Fallocate(int(f.Fd()), 0, 0, r.Size)
	if errors.Is(err, unix.EOPNOTSUPP) {
		err = writeZeros(f, r.Size) // a filesystem without fallocate
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, r.Path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		err = fmt.Errorf("allocate the disk reserve of %d bytes: %w", r.Size, err)
		if !NoSpace(err) {
			// Not a full disk but a reserve this filesystem cannot keep:
			// go without one rather than refuse writes for want of it.
			r.Size = 0
			return fmt.Errorf("%w; going on without a disk reserve", err)
		}
		return err
	}
	r.Held = true
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

// Release removes the reserve file, giving its space to the store.
func (r *Reserve) Release(now time.Time) error {
	if !r.Held {
		return nil
	}
	r.Held = false
	r.Next = now.Add(Retry)
	if err := os.Remove(r.Path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("release the disk reserve: %w", err)
	}
	return nil
}

// NoSpace reports whether err means the disk (or the process's file size
// limit, or a quota) has no room for what was written.
func NoSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) || errors.Is(err, syscall.EFBIG)
}
