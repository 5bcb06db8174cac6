package sidecar_test

import (
	"context"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"go.uber.org/zap"

	"github.com/kvsidecar/kvsidecar/internal/daemon"
	"github.com/kvsidecar/kvsidecar/sidecar"
	"github.com/kvsidecar/kvsidecar/sidecar/sidecartest"
)

func shortTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "kvsl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// startErr starts a daemon on socket and returns the error it fails with.
func startErr(t *testing.T, socket string) error {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // a daemon that does start stops at once
	d, err := daemon.New(context.Background(), daemon.Config{Server: sidecar.Config{Socket: socket}, DataDir: t.TempDir(), Project: "p"}, zap.NewNop())
	if err == nil {
		d.Run(ctx, nil)
		t.Fatal("daemon started")
	}
	return err
}

func TestSocketFile(t *testing.T) {
	t.Run("stale socket is replaced", func(t *testing.T) {
		socket := filepath.Join(shortTempDir(t), "kv.sock")
		ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: socket, Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		ln.SetUnlinkOnClose(false)
		ln.Close() // a daemon that died: the file stays, nothing answers
		if _, err := os.Stat(socket); err != nil {
			t.Fatal(err)
		}
		d := sidecartest.Start(t, sidecartest.Options{Socket: socket})
		c := dialRaw(t, d.Socket)
		c.hello()
		fi, err := os.Stat(socket)
		if err != nil || fi.Mode().Perm() != 0o666 {
			t.Fatalf("socket mode %v, %v; want 0666", fi.Mode(), err)
		}
		d.Stop()
		if _, err := os.Stat(socket); !os.IsNotExist(err) {
			t.Fatalf("socket left behind after stop: %v", err)
		}
	})
	t.Run("live socket is kept", func(t *testing.T) {
		d := sidecartest.Start(t, sidecartest.Options{})
		err := startErr(t, d.Socket)
		if !strings.Contains(err.Error(), "another daemon is serving") {
			t.Fatalf("err = %v", err)
		}
		dialRaw(t, d.Socket).hello() // the first daemon is untouched
	})
	t.Run("not a socket", func(t *testing.T) {
		path := filepath.Join(shortTempDir(t), "data.txt")
		os.WriteFile(path, []byte("precious"), 0o600)
		err := startErr(t, path)
		if !strings.Contains(err.Error(), "not a socket") {
			t.Fatalf("err = %v", err)
		}
		if b, _ := os.ReadFile(path); string(b) != "precious" {
			t.Fatal("the file was changed")
		}
	})
	t.Run("socket mode", func(t *testing.T) {
		socket := filepath.Join(shortTempDir(t), "kv.sock")
		sidecartest.Start(t, sidecartest.Options{Socket: socket, SocketMode: 0o660})
		if fi, err := os.Stat(socket); err != nil || fi.Mode().Perm() != 0o660 {
			t.Fatalf("socket mode %v, %v; want 0660", fi.Mode(), err)
		}
	})
}

// TestSocketDirectoryChecked refuses to serve from a directory every user
// may write without the sticky bit (anyone could replace the socket), and
// serves from one with it, as /tmp is.
func TestSocketDirectoryChecked(t *testing.T) {
	dir := shortTempDir(t)
	os.Chmod(dir, 0o777)
	err := startErr(t, filepath.Join(dir, "kv.sock"))
	if !strings.Contains(err.Error(), "writable by every user and has no sticky bit") {
		t.Fatalf("err = %v", err)
	}
	os.Chmod(dir, 0o777|os.ModeSticky)
	d := sidecartest.Start(t, sidecartest.Options{Socket: filepath.Join(dir, "kv.sock")})
	dialRaw(t, d.Socket).hello()
}

// TestSocketSymlinkSwap restarts the daemon while another process that can
// write the socket's directory replaces the socket, as soon as it appears,
// with a symlink to a private file. Setting the socket's mode by path
// after creating it would now and then follow the link and open the file
// to everyone; the daemon sets the mode before the socket appears and
// never touches a path it does not own, so the file keeps its mode, the
// link is not removed at stop, and no private directory is left behind.
func TestSocketSymlinkSwap(t *testing.T) {
	dir := shortTempDir(t)
	secret := filepath.Join(dir, "secret")
	if err := os.WriteFile(secret, []byte("root only"), 0o600); err != nil {
		t.Fatal(err)
	}
	socket := filepath.Join(dir, "kv.sock")
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if fi, err := os.Lstat(socket); err != nil || fi.Mode()&os.ModeSocket == 0 {
					continue
				}
				tmp := socket + ".swap" + strconv.Itoa(rand.Int())
				if os.Symlink(secret, tmp) == nil {
					os.Rename(tmp, socket)
				}
			}
		}()
	}
	// A chmod of the final path was caught within about 60 starts here.
	const starts = 100
	served, swapped := 0, 0
	for range starts {
		if fi, err := os.Lstat(socket); err == nil && fi.Mode()&os.ModeSymlink != 0 {
			swapped++
			os.Remove(socket)
		}
		d, err := daemon.New(context.Background(), daemon.Config{Server: sidecar.Config{Socket: socket}, DataDir: filepath.Join(dir, "data"), Project: "p"}, zap.NewNop())
		if err == nil {
			served++
			ctx, cancel := context.WithCancel(context.Background())
			cancel() // stop at once
			d.Run(ctx, nil)
		} else if !strings.Contains(err.Error(), "not a socket") {
			t.Fatalf("start: %v", err)
		}
		if fi, err := os.Stat(secret); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("after %d starts the private file has mode %v (%v), want 0600", served, fi.Mode(), err)
		}
	}
	close(stop)
	wg.Wait()
	left, _ := filepath.Glob(filepath.Join(dir, ".kv*"))
	if len(left) != 0 {
		t.Fatalf("private directories left behind: %v", left)
	}
	t.Logf("%d of %d starts served; the socket was swapped for a symlink %d times", served, starts, swapped)
	if swapped == 0 {
		t.Fatal("the swapping never happened; the test proved nothing")
	}
}
