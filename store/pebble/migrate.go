package pebble

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/kvsidecar/kvsidecar/store/internal/boltdump"
)

// MigratedSuffix is appended to the name of a bbolt file once its data has
// been copied into a Pebble directory; the renamed file may be deleted.
const MigratedSuffix = ".bbolt-migrated"

// migratingSuffix names the directory a migration writes before it is
// renamed into place.
const migratingSuffix = ".migrating"

// metaMigratedFrom marks a directory made by MigrateBolt: its value is the
// name of the bbolt file it was copied from.
const metaMigratedFrom = "migrated_from"

// metaMigratedFile is the identity of the bbolt file a directory was copied
// from, as fileID gave it during the copy: a bbolt file of the same name
// made or written after the migration (by a rollback to an earlier
// release) is another file, not the one whose rename a crash cut short.
const metaMigratedFile = "migrated_from_file"

// migrateChunk and migrateChunkBytes bound one batch of a migration, so a
// large file is copied in batches of a few MiB at most, never held in
// memory: a thousand small entries, or 2 MiB of large ones (below Pebble's
// large-batch threshold of half a memtable, which keeps a batch in memory
// until a flush).
const (
	migrateChunk      = 1000
	migrateChunkBytes = 2 << 20
)

// MigrateResult says what MigrateBolt did.
type MigrateResult struct {
	// Migrated is set when the bbolt file was copied and renamed (or, after
	// a crash between the two, renamed).
	Migrated bool
	// Renamed is the bbolt file's new name.
	Renamed                 string
	Projects, Entries, Size int64
}

// MigrateBolt moves the data of the bbolt file at from, the embedded store
// of earlier releases (read by store/internal/boltdump), into the Pebble
// directory cfg.Path, when from exists and cfg.Path does not: it copies the
// default quota, each project's quota override, usage and version counter
// and every entry with its value, expiry and version into a directory
// beside cfg.Path, syncs it, renames it to cfg.Path, and then renames from
// to from + MigratedSuffix. Versions are kept, so clients' conditional
// writes keep working, and stay strictly increasing per project.
//
// It is safe to run again after a crash at any point: a partial copy is
// removed and made again; a directory made by a migration whose bbolt file
// was not yet renamed gets the rename. A directory that exists beside a
// bbolt file it was not made from is an error: the caller must not
// silently serve one and ignore the other. With no room for the copy it
// fails, saying how much space it needs. With no bbolt file it does
// nothing. A second MigrateBolt on the same directory, in this process or
// another, waits up to cfg.LockTimeout for the first to end.
func MigrateBolt(ctx context.Context, from string, cfg Config) (MigrateResult, error) {
	cfg = cfg.withDefaults()
	if cfg.Path == "" {
		return MigrateResult{}, errors.New("migrate: Config.Path is empty")
	}
	tmp := filepath.Clean(cfg.Path) + migratingSuffix
	renamed := from + MigratedSuffix
	if _, err := os.Stat(from); errors.Is(err, os.ErrNotExist) {
		return MigrateResult{}, nil
	} else if err != nil {
		return MigrateResult{}, fmt.Errorf("migrate %s: %w", from, err)
	}
	// Another daemon started on the same directory may be migrating: the
	// copy beside cfg.Path is one process's at a time.
	unlock, err := lockMigration(ctx, filepath.Dir(filepath.Clean(cfg.Path)), cfg.LockTimeout)
	if err != nil {
		return MigrateResult{}, fmt.Errorf("migrate %s: %w", from, err)
	}
	defer unlock()
	// What the other process left once it let go.
	if _, err := os.Stat(from); errors.Is(err, os.ErrNotExist) {
		return MigrateResult{}, nil
	} else if err != nil {
		return MigrateResult{}, fmt.Errorf("migrate %s: %w", from, err)
	}
	if _, err := os.Stat(cfg.Path); err == nil {
		// Both exist: finish a migration that stopped before its rename,
		// or refuse.
		made, err := madeFrom(cfg, from)
		if err != nil {
			return MigrateResult{}, err
		}
		if !made {
			return MigrateResult{}, fmt.Errorf("both %s (bbolt) and %s exist, and %s was not migrated from it: move one of them away", from, cfg.Path, cfg.Path)
		}
		if err := renameSynced(from, renamed); err != nil {
			return MigrateResult{}, fmt.Errorf("migrate %s: %w", from, err)
		}
		cfg.Logger.Info("pebble: finished the migration of the bbolt file; the old file may be deleted",
			zap.String("from", from), zap.String("to", cfg.Path), zap.String("old_file", renamed))
		return MigrateResult{Migrated: true, Renamed: renamed}, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return MigrateResult{}, fmt.Errorf("migrate to %s: %w", cfg.Path, err)
	}
	if err := os.RemoveAll(tmp); err != nil { // a copy a crash cut short
		return MigrateResult{}, fmt.Errorf("migrate: remove the unfinished copy %s: %w", tmp, err)
	}
	var res MigrateResult
	err = boltdump.ReadDump(from, cfg.LockTimeout, func(d *boltdump.Dump) error {
		if err := checkRoom(filepath.Dir(tmp), d.Size()); err != nil {
			return err
		}
		// The file cannot change while its dump is open.
		id, err := fileID(from)
		if err != nil {
			return err
		}
		res, err = copyDump(ctx, d, cfg, tmp, filepath.Base(from), id)
		return err
	})
	if err != nil {
		_ = os.RemoveAll(tmp)
		return MigrateResult{}, fmt.Errorf("migrate %s to %s: %w", from, cfg.Path, err)
	}
	if err := renameSynced(tmp, cfg.Path); err != nil {
		return MigrateResult{}, fmt.Errorf("migrate %s: %w", from, err)
	}
	if err := renameSynced(from, renamed); err != nil {
		return MigrateResult{}, fmt.Errorf("migrate %s: %w", from, err)
	}
	// bbolt's disk reserve is only allocated space: the new store keeps
	// its own.
	_ = os.Remove(from + ".reserve")
	res.Migrated, res.Renamed = true, renamed
	cfg.Logger.Info("pebble: migrated the bbolt file; the old file may be deleted",
		zap.String("from", from), zap.String("to", cfg.Path), zap.String("old_file", renamed),
		zap.Int64("projects", res.Projects), zap.Int64("entries", res.Entries), zap.Int64("bbolt_file_bytes", res.Size))
	return res, nil
}

// checkRoom fails unless dir's filesystem has room for a copy of a bbolt
// file of size bytes: the data is written to Pebble's log and again to its
// tables before the log is removed, so up to twice the file, and the
// headroom the store keeps for itself.
func checkRoom(dir string, size int64) error {
	need := 2*size + diskHeadroom
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return fmt.Errorf("read the free space of %s: %w", dir, err)
	}
	if free := int64(st.Bavail) * int64(st.Bsize); free < need {
		return fmt.Errorf("not enough disk space to migrate: the copy needs %d bytes (%d MiB) free in %s, there are %d (%d MiB); free space there and start again",
			need, (need+1<<20-1)>>20, dir, free, free>>20)
	}
	return nil
}

// lockMigration takes the lock of migrations into dir, waiting up to
// timeout for another process that holds it, and returns its release. The
// lock is a flock of the directory itself, so it leaves no file behind and
// goes with the process that held it.
func lockMigration(ctx context.Context, dir string, timeout time.Duration) (unlock func(), err error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(timeout)
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() { _ = f.Close() }, nil // closing releases the lock
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			_ = f.Close()
			return nil, fmt.Errorf("lock %s for the migration: %w", dir, err)
		}
		if time.Now().After(deadline) {
			_ = f.Close()
			return nil, fmt.Errorf("another process is migrating the bbolt file in %s (waited %s)", dir, timeout)
		}
		select {
		case <-ctx.Done():
			_ = f.Close()
			return nil, ctx.Err()
		case <-time.After(lockRetry):
		}
	}
}

// fileID identifies the file at path: its device, inode, size and
// modification time.
func fileID(path string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return "", fmt.Errorf("stat %s: no device and inode", path)
	}
	return fmt.Sprintf("%d:%d:%d:%d", st.Dev, st.Ino, fi.Size(), fi.ModTime().UnixNano()), nil
}

// madeFrom reports whether the Pebble directory of cfg was made by a
// migration of the file from, as it is now.
func madeFrom(cfg Config, from string) (bool, error) {
	opts := pebbleOptions(cfg, nil)
	opts.ReadOnly = true
	db, err := pebble.Open(cfg.Path, opts)
	opts.Cache.Unref()
	if err != nil {
		return false, fmt.Errorf("open %s: %w", cfg.Path, err)
	}
	defer db.Close()
	v, closer, err := db.Get(metaKey(metaMigratedFrom))
	if errors.Is(err, pebble.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read %s: %w", cfg.Path, err)
	}
	sameName := string(v) == filepath.Base(from)
	_ = closer.Close()
	if !sameName {
		return false, nil
	}
	v, closer, err = db.Get(metaKey(metaMigratedFile))
	if errors.Is(err, pebble.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read %s: %w", cfg.Path, err)
	}
	defer closer.Close()
	id, err := fileID(from)
	if err != nil {
		return false, fmt.Errorf("migrate %s: %w", from, err)
	}
	return string(v) == id, nil
}

// copyDump writes everything d holds into a new Pebble directory at dir, in
// the layout of this package, and syncs it.
func copyDump(ctx context.Context, d *boltdump.Dump, cfg Config, dir, fromName, fromID string) (MigrateResult, error) {
	res := MigrateResult{Size: d.Size()}
	opts := pebbleOptions(cfg, nil)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return res, err
	}
	db, err := pebble.Open(dir, opts)
	opts.Cache.Unref()
	if err != nil {
		return res, err
	}
	defer db.Close()

	b := db.NewBatch()
	flush := func(sync bool) error {
		mode := pebble.NoSync
		if sync {
			mode = pebble.Sync
		}
		if err := b.Commit(mode); err != nil {
			return err
		}
		_ = b.Close()
		b = db.NewBatch()
		return ctx.Err()
	}
	defer func() { _ = b.Close() }()

	if err := b.Set(metaKey(metaFormat), encodeInt(formatVersion), nil); err != nil {
		return res, err
	}
	if q := d.DefaultQuota(); q > 0 {
		if err := b.Set(metaKey(metaDefaultQuota), encodeInt(q), nil); err != nil {
			return res, err
		}
	}
	err = d.Projects(func(p boltdump.Project) error {
		st := projectState{version: p.Version, quota: p.Quota}
		n := 0
		err := d.Entries(p.Name, func(e boltdump.Entry) error {
			if e.Version > st.version {
				return fmt.Errorf("project %q key %q: version %d after the project's counter %d", p.Name, e.Key, e.Version, st.version)
			}
			if err := b.Set(dataKey(p.Name, e.Key), encodeRecord(e.Expiry, e.Version, e.Value), nil); err != nil {
				return err
			}
			if e.Expiry != 0 {
				if err := b.Set(expKey(p.Name, e.Expiry, e.Key), nil, nil); err != nil {
					return err
				}
			}
			st.bytes += int64(len(e.Key) + len(e.Value))
			st.entries++
			if n++; n%migrateChunk == 0 || b.Len() >= migrateChunkBytes {
				return flush(false)
			}
			return nil
		})
		if err != nil {
			return err
		}
		res.Projects++
		res.Entries += st.entries
		return b.Set(projectKey(p.Name), st.encode(), nil)
	})
	if err != nil {
		return res, err
	}
	// Last, the mark of a finished copy, in the batch whose log sync makes
	// every earlier batch durable with it.
	if err := b.Set(metaKey(metaMigratedFrom), []byte(fromName), nil); err != nil {
		return res, err
	}
	if err := b.Set(metaKey(metaMigratedFile), []byte(fromID), nil); err != nil {
		return res, err
	}
	if err := flush(true); err != nil {
		return res, err
	}
	if err := db.Flush(); err != nil {
		return res, err
	}
	return res, nil
}

// renameSynced renames from to to and syncs their directory, so the rename
// survives a crash.
func renameSynced(from, to string) error {
	if err := os.Rename(from, to); err != nil {
		return err
	}
	dir, err := os.Open(filepath.Dir(to))
	if err != nil {
		return err
	}
	defer dir.Close()
	if err := dir.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", filepath.Dir(to), err)
	}
	return nil
}
