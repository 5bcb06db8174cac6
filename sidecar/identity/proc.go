package identity

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// peerPIDFD returns a pidfd of the peer of a Unix socket (SO_PEERPIDFD,
// Linux 6.5 and later): a handle on the very process that connected, which
// stays valid, and never comes to name another process, however long the
// daemon takes to resolve it. It returns nil where the kernel has no
// SO_PEERPIDFD.
func peerPIDFD(c *net.UnixConn) *os.File {
	raw, err := c.SyscallConn()
	if err != nil {
		return nil
	}
	fd := -1
	raw.Control(func(s uintptr) {
		fd, err = unix.GetsockoptInt(int(s), unix.SOL_SOCKET, unix.SO_PEERPIDFD)
	})
	if err != nil || fd < 0 {
		return nil
	}
	return os.NewFile(uintptr(fd), "pidfd")
}

// errProcessGone is returned when the peer exited while it was being
// resolved: its pid may already name another process, so what was read
// under /proc cannot be trusted.
var errProcessGone = errors.New("the process exited while it was being identified, so its pid may name another process now")

// pidfdAlive reports whether the process of a pidfd is still running. While
// it runs its pid cannot be reused, so what was read under /proc/<pid>
// before this check was the peer's own.
func pidfdAlive(f *os.File) error {
	raw, err := f.SyscallConn()
	if err != nil {
		return fmt.Errorf("check pidfd: %w", err)
	}
	var sigErr error
	if err := raw.Control(func(fd uintptr) {
		sigErr = unix.PidfdSendSignal(int(fd), 0, nil, 0)
	}); err != nil {
		return fmt.Errorf("check pidfd: %w", err)
	}
	switch {
	case sigErr == nil, errors.Is(sigErr, unix.EPERM):
		// EPERM: alive, but ours to signal it is not (the check needs no
		// permission to tell a live process from a dead one).
		return nil
	case errors.Is(sigErr, unix.ESRCH):
		return errProcessGone
	default:
		return fmt.Errorf("check pidfd: %w", sigErr)
	}
}

// startTime returns the start time of process pid (field 22 of
// /proc/<pid>/stat, clock ticks since boot). Two processes that hold the
// same pid one after the other have different start times, which is what
// the pid-reuse check compares where the kernel has no SO_PEERPIDFD.
func startTime(proc fs.FS, pid int32) (uint64, error) {
	b, err := fs.ReadFile(proc, strconv.Itoa(int(pid))+"/stat")
	if err != nil {
		return 0, fmt.Errorf("read process start time: %w", err)
	}
	// The command name (field 2) is in parentheses and may hold spaces and
	// parentheses itself: the fields that follow start after the last ')'.
	s := string(b)
	end := strings.LastIndexByte(s, ')')
	if end < 0 {
		return 0, fmt.Errorf("read process start time: /proc/%d/stat has no command name", pid)
	}
	fields := strings.Fields(s[end+1:])
	// fields[0] is field 3 (state); field 22 is fields[19].
	if len(fields) < 20 {
		return 0, fmt.Errorf("read process start time: /proc/%d/stat has %d fields, want at least 22", pid, len(fields)+2)
	}
	t, err := strconv.ParseUint(fields[19], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("read process start time: /proc/%d/stat: bad start time %q", pid, fields[19])
	}
	return t, nil
}
