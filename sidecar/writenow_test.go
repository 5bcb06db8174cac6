package sidecar

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sync/semaphore"

	"github.com/kvsidecar/kvsidecar/sidecar/identity"
)

// TestWriteNowOnFullSocket: an answer written on the store's goroutine
// (writeNow) into a socket the peer has stopped reading must not wait,
// must not lose or reorder a byte, and must keep what its request holds
// until the write loop has written the rest: the peer receives the filler
// and then exactly the frame, and the bytes come back only then.
func TestWriteNowOnFullSocket(t *testing.T) {
	dir := t.TempDir()
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(dir, "s"), Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peer, err := net.Dial("unix", filepath.Join(dir, "s"))
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	nc, err := ln.AcceptUnix()
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer(Config{MaxInflight: 8, MaxInflightBytes: 1 << 30, MaxConnInflightBytes: 1 << 30, WriteTimeout: 10 * time.Second},
		nil, identity.Static{Project: "p"}, NewMetrics(), zap.NewNop())
	c := newConn(s, nc, identity.Peer{}, &projectState{name: "p", bytes: semaphore.NewWeighted(1 << 30)})

	// Fill the socket until the kernel takes no more.
	var filler bytes.Buffer
	chunk := bytes.Repeat([]byte{'f'}, 4096)
	nc.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
	for {
		n, err := nc.Write(chunk)
		filler.Write(chunk[:n])
		if errors.Is(err, os.ErrDeadlineExceeded) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	nc.SetWriteDeadline(time.Time{})

	const held = 1 << 20
	if err := c.acquire(held); err != nil {
		t.Fatal(err)
	}
	frame := bytes.Repeat([]byte("answer."), 3000)
	c.outMu.Lock()
	buf, holds := c.takeOutput()
	c.outMu.Unlock()
	buf = append(buf, frame...)
	holds = append(holds, hold{bytes: held})

	start := time.Now()
	c.writeNow(buf, holds)
	if d := time.Since(start); d > time.Second {
		t.Errorf("writeNow waited %s on a full socket", d)
	}
	if c.bytes.TryAcquire(1 << 30) {
		t.Fatal("the answer's bytes were given back before it was written")
	}

	go c.writeLoop()
	got := make(chan []byte)
	go func() {
		b, _ := io.ReadAll(peer)
		got <- b
	}()
	c.closeOutput()
	<-c.writerDone
	nc.Close()
	want := append(filler.Bytes(), frame...)
	if b := <-got; !bytes.Equal(b, want) {
		t.Fatalf("the peer received %d bytes, want %d: the filler then the frame, in order", len(b), len(want))
	}
	if !c.bytes.TryAcquire(1 << 30) {
		t.Error("the answer's bytes were not given back once it was written")
	}
}
