package sidecar_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
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
