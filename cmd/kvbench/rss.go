package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// rssSampleInterval is how often the daemon's RSS is read during a run:
// often enough to catch a peak that lasts a fraction of a second, rarely
// enough that reading /proc costs the 2-core machine nothing measurable.
const rssSampleInterval = 20 * time.Millisecond

// peerPID returns the pid of the process serving socket, as the kernel
// records it for a connection (SO_PEERCRED): the process that listens. It
// is 0 when that process is in a pid namespace this one cannot see.
func peerPID(ctx context.Context, socket string) (int, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return 0, err
	}
	defer nc.Close()
	raw, err := nc.(*net.UnixConn).SyscallConn()
	if err != nil {
		return 0, err
	}
	var cred *syscall.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil {
		return 0, err
	}
	if credErr != nil {
		return 0, fmt.Errorf("SO_PEERCRED: %w", credErr)
	}
	return int(cred.Pid), nil
}

// readRSS returns the resident set size of pid in bytes, from the VmRSS
// line of /proc/<pid>/status.
func readRSS(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		rest, ok := bytes.CutPrefix(sc.Bytes(), []byte("VmRSS:"))
		if !ok {
			continue
		}
		f := bytes.Fields(rest) // "12345", "kB"
		if len(f) != 2 || string(f[1]) != "kB" {
			return 0, fmt.Errorf("/proc/%d/status: unexpected VmRSS line %q", pid, sc.Text())
		}
		kb, err := strconv.ParseInt(string(f[0]), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/status: VmRSS: %w", pid, err)
		}
		return kb << 10, nil
	}
	return 0, fmt.Errorf("/proc/%d/status has no VmRSS line (a kernel thread or a zombie?)", pid)
}

// rssSampler reads a process's RSS every rssSampleInterval and keeps the
// largest reading, from start until stop.
type rssSampler struct {
	pid  int
	done chan struct{}
	wg   sync.WaitGroup
	peak int64
}

// startRSSSampler starts sampling pid; pid <= 0 samples nothing.
func startRSSSampler(pid int) *rssSampler {
	s := &rssSampler{pid: pid, done: make(chan struct{})}
	if pid <= 0 {
		return s
	}
	s.wg.Go(func() {
		t := time.NewTicker(rssSampleInterval)
		defer t.Stop()
		for {
			if rss, err := readRSS(pid); err == nil {
				s.peak = max(s.peak, rss)
			}
			select {
			case <-t.C:
			case <-s.done:
				return
			}
		}
	})
	return s
}

// stop ends the sampling and returns the peak RSS in bytes, or 0 when
// nothing could be read.
func (s *rssSampler) stop() int64 {
	close(s.done)
	s.wg.Wait()
	if s.pid > 0 {
		if rss, err := readRSS(s.pid); err == nil {
			s.peak = max(s.peak, rss)
		}
	}
	return s.peak
}
