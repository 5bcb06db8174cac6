package admin

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"

	"github.com/kvsidecar/kvsidecar/store"
)

// Role is what a token may do: RoleAdmin everything, a project role
// (ProjectRole) one project's keys, usage, export and import.
type Role string

// RoleAdmin may reach every project and the global settings.
const RoleAdmin Role = "admin"

const projectRolePrefix = "project:"

// ProjectRole is the role of a token confined to project.
func ProjectRole(project string) Role { return Role(projectRolePrefix + project) }

// Project returns the project of a project role, and "" for admin.
func (r Role) Project() string {
	p, _ := strings.CutPrefix(string(r), projectRolePrefix)
	if p == string(r) {
		return ""
	}
	return p
}

// mayReach reports whether the role may work on project.
func (r Role) mayReach(project string) bool {
	return r == RoleAdmin || r.Project() == project
}

// ParseRole checks a role as written in the tokens file or given to
// kvctl token new.
func ParseRole(s string) (Role, error) {
	if s == string(RoleAdmin) {
		return RoleAdmin, nil
	}
	if p, ok := strings.CutPrefix(s, projectRolePrefix); ok {
		if err := store.CheckProject(p); err != nil {
			return "", fmt.Errorf("role %q: %w", s, err)
		}
		return Role(s), nil
	}
	return "", fmt.Errorf("role %q: want admin or project:NAME", s)
}

// tokenEntry is one line of the tokens file: a token's SHA-256 and role.
type tokenEntry struct {
	hash [sha256.Size]byte
	role Role
}

// Tokens is the set of accepted tokens, loaded from a file of lines
// "sha256:<64 hex> ROLE" ('#' starts a comment; blank lines are ignored).
// The file holds hashes, never tokens. Safe for concurrent use.
type Tokens struct {
	path    string
	mu      sync.RWMutex
	entries []tokenEntry
}

// LoadTokens reads the tokens file at path. A file with no token is an
// error: it would lock everyone out without saying so.
func LoadTokens(path string) (*Tokens, error) {
	t := &Tokens{path: path}
	if err := t.Reload(); err != nil {
		return nil, err
	}
	return t, nil
}

// Reload re-reads the file. On error the tokens in force stay.
func (t *Tokens) Reload() error {
	data, err := os.ReadFile(t.path)
	if err != nil {
		return fmt.Errorf("read tokens file: %w", err)
	}
	entries, err := parseTokens(data)
	if err != nil {
		return fmt.Errorf("tokens file %s: %w", t.path, err)
	}
	t.mu.Lock()
	t.entries = entries
	t.mu.Unlock()
	return nil
}

// Len returns the number of tokens in force.
func (t *Tokens) Len() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return len(t.entries)
}

func parseTokens(data []byte) ([]tokenEntry, error) {
	var entries []tokenEntry
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line, _, _ := strings.Cut(sc.Text(), "#")
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		if len(fields) != 2 {
			return nil, fmt.Errorf("line %d: want \"sha256:<64 hex digits> ROLE\"", n)
		}
		hexHash, ok := strings.CutPrefix(fields[0], "sha256:")
		if !ok {
			return nil, fmt.Errorf("line %d: the hash must start with sha256: (the file holds hashes of tokens, never tokens)", n)
		}
		var e tokenEntry
		if b, err := hex.DecodeString(hexHash); err != nil || len(b) != sha256.Size {
			return nil, fmt.Errorf("line %d: the hash must be 64 hex digits", n)
		} else {
			copy(e.hash[:], b)
		}
		role, err := ParseRole(fields[1])
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		e.role = role
		entries = append(entries, e)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(entries) == 0 {
		return nil, errors.New("no tokens: add a line \"sha256:<hex> ROLE\" (kvctl token new ROLE prints one)")
	}
	return entries, nil
}

// Lookup returns the role of token. It hashes the token and compares the
// hash with every entry in constant time, without stopping at a match, so
// the time taken says nothing about which entry (if any) matched.
func (t *Tokens) Lookup(token string) (Role, bool) {
	h := sha256.Sum256([]byte(token))
	t.mu.RLock()
	defer t.mu.RUnlock()
	var role Role
	found := 0
	for _, e := range t.entries {
		eq := subtle.ConstantTimeCompare(h[:], e.hash[:])
		if eq == 1 && found == 0 {
			role = e.role
		}
		found |= eq
	}
	return role, found == 1
}

// NewToken returns a new random token and its line for the tokens file.
func NewToken(role Role) (token, line string, err error) {
	if _, err := ParseRole(string(role)); err != nil {
		return "", "", err
	}
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", "", fmt.Errorf("read random bytes: %w", err)
	}
	token = "kvs_" + base64.RawURLEncoding.EncodeToString(b[:])
	return token, TokenLine(token, role), nil
}

// TokenLine is the tokens file line of token with role.
func TokenLine(token string, role Role) string {
	h := sha256.Sum256([]byte(token))
	return "sha256:" + hex.EncodeToString(h[:]) + " " + string(role)
}
