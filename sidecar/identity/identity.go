// Package identity turns the peer of a Unix socket into the project it acts
// for. The daemon reads the peer's credentials (SO_PEERCRED) once, when it
// accepts a connection, and asks a Resolver for the project; nothing the
// peer sends can change the answer.
//
// A Resolver may also implement Reloader (the daemon calls Reload on SIGHUP)
// and io.Closer (the daemon calls Close once it has stopped serving). The
// daemon discovers both by asserting these interfaces, never a concrete
// type, so a new resolver needs no change outside its own file and the
// daemon's --identity switch.
package identity

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// Peer is the identity of the process at the other end of a connection, as
// the kernel reports it when the connection is accepted.
type Peer struct {
	PID int32
	UID uint32
	GID uint32

	// PIDFD is a pidfd of the peer process (SO_PEERPIDFD), held so that a
	// resolver reading /proc/<PID> can tell whether the pid still names the
	// peer; nil where the kernel has none (before Linux 6.5). PeerOf opens
	// it; Release closes it once the connection is resolved.
	PIDFD *os.File
}

// Release closes the peer's pidfd, if it has one. Call it once the peer is
// resolved.
func (p Peer) Release() {
	if p.PIDFD != nil {
		p.PIDFD.Close()
	}
}

// String formats the peer for logs and error messages.
func (p Peer) String() string {
	return fmt.Sprintf("pid %d uid %d gid %d", p.PID, p.UID, p.GID)
}

// ErrUnmapped is returned by a Resolver for a peer that belongs to no project.
var ErrUnmapped = errors.New("peer is not mapped to any project")

// Resolver maps a peer to its project. Implementations are safe for
// concurrent use. Resolve is called once per connection, when it is
// accepted; ctx bounds the call and is cancelled when the daemon stops. An
// error refuses the caller: wrap ErrUnmapped for a peer that belongs to no
// project, and name the peer's credential that decided it.
type Resolver interface {
	Resolve(ctx context.Context, p Peer) (project string, err error)
}

// Reloader is implemented by resolvers whose mapping can be re-read while
// the daemon runs (on SIGHUP). A failed Reload must leave the previous
// mapping in force. It may run concurrently with Resolve.
type Reloader interface {
	Reload(ctx context.Context) error
}

// Waiter is implemented by resolvers whose Resolve may wait before it can
// answer (the k8s resolver waits a little for its watch to see a new pod).
// The server resolves their callers off its accept loop, so that a wait
// delays only its own caller; other resolvers answer from memory, in the
// accept loop, which keeps a flood of refused peers cheap.
type Waiter interface {
	MayWait() bool
}

// The resolvers of this package, and what they implement.
var (
	_ Resolver = Static{}
	_ Resolver = (*UIDMap)(nil)
	_ Reloader = (*UIDMap)(nil)
)

// PeerOf reads the kernel's credentials of the peer of a Unix socket
// connection, and a pidfd of the peer where the kernel has SO_PEERPIDFD;
// the caller calls Release on the result once it is resolved.
func PeerOf(c *net.UnixConn) (Peer, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return Peer{}, fmt.Errorf("read peer credentials: %w", err)
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return Peer{}, fmt.Errorf("read peer credentials: %w", err)
	}
	if credErr != nil {
		return Peer{}, fmt.Errorf("read peer credentials: %w", credErr)
	}
	return Peer{PID: cred.Pid, UID: cred.Uid, GID: cred.Gid, PIDFD: peerPIDFD(c)}, nil
}

// Static maps every peer to one project: the pod-sidecar shape, where the
// daemon serves the functions of one pod and learns the project from the
// pod's label.
type Static struct {
	Project string
}

// Resolve returns the static project.
func (s Static) Resolve(context.Context, Peer) (string, error) { return s.Project, nil }

// Rule maps the uids From..To (inclusive) to a project.
type Rule struct {
	From, To uint32
	Project  string
}

// ParseUIDMap reads a uid map: one rule a line, "UID PROJECT" or
// "FROM-TO PROJECT"; blank lines and text after '#' are ignored. Ranges
// must not overlap. Errors name the line.
func ParseUIDMap(r io.Reader) ([]Rule, error) {
	var rules []Rule
	sc := bufio.NewScanner(r)
	for line := 1; sc.Scan(); line++ {
		text, _, _ := strings.Cut(sc.Text(), "#")
		fields := strings.Fields(text)
		if len(fields) == 0 {
			continue
		}
		if len(fields) != 2 {
			return nil, fmt.Errorf("line %d: want \"UID PROJECT\" or \"FROM-TO PROJECT\", got %q", line, strings.TrimSpace(text))
		}
		from, to, err := parseRange(fields[0])
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		rules = append(rules, Rule{From: from, To: to, Project: fields[1]})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read uid map: %w", err)
	}
	sort.Slice(rules, func(i, j int) bool { return rules[i].From < rules[j].From })
	for i := 1; i < len(rules); i++ {
		if rules[i].From <= rules[i-1].To {
			return nil, fmt.Errorf("uid %d is mapped twice (to %q and %q)", rules[i].From, rules[i-1].Project, rules[i].Project)
		}
	}
	return rules, nil
}

func parseRange(s string) (uint32, uint32, error) {
	a, b, isRange := strings.Cut(s, "-")
	from, err := strconv.ParseUint(a, 10, 32)
	if err != nil {
		return 0, 0, fmt.Errorf("bad uid %q: want a number from 0 to 4294967295", a)
	}
	to := from
	if isRange {
		if to, err = strconv.ParseUint(b, 10, 32); err != nil {
			return 0, 0, fmt.Errorf("bad uid %q: want a number from 0 to 4294967295", b)
		}
		if to < from {
			return 0, 0, fmt.Errorf("bad range %q: the end is below the start", s)
		}
	}
	return uint32(from), uint32(to), nil
}

// UIDMap maps peers to projects by uid, from a file that Reload re-reads:
// the per-node shape, where each project's functions run under their own uids.
type UIDMap struct {
	path  string
	mu    sync.RWMutex
	rules []Rule // sorted by From, non-overlapping
}

// LoadUIDMap reads the uid map file at path.
func LoadUIDMap(ctx context.Context, path string) (*UIDMap, error) {
	m := &UIDMap{path: path}
	if err := m.Reload(ctx); err != nil {
		return nil, err
	}
	return m, nil
}

// ErrEmptyMap is returned when a uid map file holds no rules: it would
// refuse every caller, which is far more often a mistake (a truncated or
// half-written file) than an intent.
var ErrEmptyMap = errors.New("the uid map has no rules, so every caller would be refused; the map in force stays")

// Reload re-reads the file. On error (unreadable, unparsable or empty) the
// previous rules stay in force. The file is local and small, so ctx is not
// consulted.
func (m *UIDMap) Reload(context.Context) error {
	f, err := os.Open(m.path)
	if err != nil {
		return fmt.Errorf("load uid map: %w", err)
	}
	defer f.Close()
	rules, err := ParseUIDMap(f)
	if err != nil {
		return fmt.Errorf("load uid map %s: %w", m.path, err)
	}
	if len(rules) == 0 {
		return fmt.Errorf("load uid map %s: %w", m.path, ErrEmptyMap)
	}
	m.mu.Lock()
	m.rules = rules
	m.mu.Unlock()
	return nil
}

// Len returns the number of rules in force.
func (m *UIDMap) Len() int {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return len(m.rules)
}

// Resolve returns the project of the peer's uid.
func (m *UIDMap) Resolve(_ context.Context, p Peer) (string, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	i := sort.Search(len(m.rules), func(i int) bool { return m.rules[i].To >= p.UID })
	if i < len(m.rules) && m.rules[i].From <= p.UID {
		return m.rules[i].Project, nil
	}
	return "", fmt.Errorf("%w: uid %d is not in the uid map", ErrUnmapped, p.UID)
}
