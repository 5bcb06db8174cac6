package client_test

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kvsidecar/kvsidecar/client"
	"github.com/kvsidecar/kvsidecar/sidecar/sidecartest"
)

// TestDialRetriesAFullBacklog dials a socket whose listen backlog is full,
// as a daemon's is while a flood of connections outpaces its accepting: the
// kernel refuses the connect with EAGAIN. The client dials again until the
// listener accepts, and is then served, instead of failing at once.
func TestDialRetriesAFullBacklog(t *testing.T) {
	d := sidecartest.Start(t, sidecartest.Options{Project: "shop"})
	dir, err := os.MkdirTemp("", "kvsbl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "full.sock")

	// A listener with a backlog of none, which accepts nothing yet.
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	ln, err := net.FileListener(os.NewFile(uintptr(fd), path))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	// Fill the backlog until the kernel says EAGAIN.
	full := false
	for range 16 {
		nc, err := net.Dial("unix", path)
		if errors.Is(err, syscall.EAGAIN) {
			full = true
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { nc.Close() })
	}
	if !full {
		t.Fatal("the backlog never filled")
	}

	dialed := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, err := client.Dial(ctx, path)
		if err == nil {
			if c.Project() != "shop" {
				err = errors.New("served by the wrong daemon")
			}
			c.Close()
		}
		dialed <- err
	}()
	select {
	case err := <-dialed:
		t.Fatalf("dial returned while the backlog was full: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	// Now accept, and relay each connection to the daemon.
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer nc.Close()
				up, err := net.Dial("unix", d.Socket)
				if err != nil {
					return
				}
				defer up.Close()
				go io.Copy(up, nc)
				io.Copy(nc, up)
			}()
		}
	}()
	if err := <-dialed; err != nil {
		t.Fatalf("dial once the backlog drained: %v", err)
	}
}
