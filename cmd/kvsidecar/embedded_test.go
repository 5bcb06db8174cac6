package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kvsidecar/kvsidecar/client"
)

// TestSIGKILLUnderLoadKeepsAcknowledgedWrites kills the daemon with
// SIGKILL while writers overwrite their keys with conditional sets, and
// restarts it on the same data: every acknowledged write is there with its
// version (or a later write that was in flight), and versions go on growing
// after the restart, also for a key deleted before the kill.
func TestSIGKILLUnderLoadKeepsAcknowledgedWrites(t *testing.T) {
	dir, err := os.MkdirTemp("", "kvskill")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	socket, data := filepath.Join(dir, "kv.sock"), filepath.Join(dir, "data")
	d := startDaemon(t, socket, "--data-dir", data)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// A key deleted before the kill: its re-create after the restart must
	// get a version after the one it had.
	c0, err := client.Dial(ctx, socket)
	if err != nil {
		t.Fatal(err)
	}
	deletedVersion, err := c0.SetIf(ctx, "deleted", "old", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if existed, err := c0.Delete(ctx, "deleted"); err != nil || !existed {
		t.Fatalf("Delete = %v, %v", existed, err)
	}
	c0.Close()

	type acked struct {
		value, version uint64
		inFlight       uint64 // the value of the write sent after it, 0 if none
	}
	const writers, keysPerWriter = 16, 20
	var (
		mu    sync.Mutex
		state = map[string]*acked{}
		wg    sync.WaitGroup
	)
	started := make(chan struct{}, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := client.Dial(ctx, socket)
			if err != nil {
				t.Errorf("writer %d: %v", w, err)
				started <- struct{}{}
				return
			}
			defer c.Close()
			for i := uint64(1); ; i++ {
				key := fmt.Sprintf("w%02d-%02d", w, i%keysPerWriter)
				mu.Lock()
				a := state[key]
				if a == nil {
					a = &acked{}
					state[key] = a
				}
				a.inFlight = i
				prev := a.version
				mu.Unlock()
				version, err := c.SetIf(ctx, key, i, 0, prev)
				if err != nil {
					if i == 1 {
						started <- struct{}{}
					}
					return // killed: the write may or may not be stored
				}
				mu.Lock()
				if version <= prev {
					t.Errorf("SetIf(%s) = version %d after %d", key, version, prev)
				}
				a.value, a.version, a.inFlight = i, version, 0
				mu.Unlock()
				if i == 200 {
					started <- struct{}{}
				}
			}
		}()
	}
	for range writers {
		<-started
	}
	if err := d.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-d.done
	wg.Wait()

	startDaemon(t, socket, "--data-dir", data)
	c, err := client.Dial(ctx, socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	bad, n := 0, 0
	for key, a := range state {
		if a.version == 0 {
			continue // never acknowledged
		}
		n++
		var got uint64
		version, found, err := c.GetVersioned(ctx, key, &got)
		if err != nil {
			t.Fatal(err)
		}
		ok := found && (version == a.version && got == a.value ||
			version > a.version && a.inFlight != 0 && got == a.inFlight)
		if !ok {
			bad++
			if bad < 5 {
				t.Errorf("%s: acknowledged %d at version %d (in flight: %d); after the restart found=%v value %d version %d",
					key, a.value, a.version, a.inFlight, found, got, version)
			}
			continue
		}
		// The next write of the key gets a later version.
		next, err := c.SetIf(ctx, key, 0, 0, version)
		if err != nil || next <= version {
			t.Errorf("SetIf(%s) after the restart = version %d, %v; want one after %d", key, next, err, version)
		}
	}
	if bad > 0 {
		t.Fatalf("%d of %d acknowledged writes lost or changed across SIGKILL", bad, n)
	}
	if v, err := c.SetIf(ctx, "deleted", "new", 0, 0); err != nil || v <= deletedVersion {
		t.Errorf("re-create of a key deleted before the kill = version %d, %v; want one after %d", v, err, deletedVersion)
	}
	t.Logf("%d keys acknowledged, all present after SIGKILL and restart", n)
}

// TestSecondDaemonOnOneDataDir: a second daemon started on the data
// directory of a running one stops at once with an error naming the lock,
// and the first serves on.
func TestSecondDaemonOnOneDataDir(t *testing.T) {
	dir, err := os.MkdirTemp("", "kvtwo")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	data := filepath.Join(dir, "data")
	first := filepath.Join(dir, "first.sock")
	startDaemon(t, first, "--data-dir", data)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, first)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Set(ctx, "k", "v", 0); err != nil {
		t.Fatal(err)
	}

	cmd := daemonCmd("--socket", filepath.Join(dir, "second.sock"), "--project", "dev", "--metrics-addr", "",
		"--log-format", "console", "--data-dir", data)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("second daemon: exit %v, want code 1\n%s", err, out)
	}
	if !strings.Contains(string(out), "locked by another process") {
		t.Errorf("second daemon's error does not say the store is locked:\n%s", out)
	}
	var got string
	if found, err := c.Get(ctx, "k", &got); err != nil || !found || got != "v" {
		t.Fatalf("first daemon after the second's start: Get = %q, %v, %v", got, found, err)
	}
}
