package sidecar_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kvsidecar/kvsidecar/client"
	"github.com/kvsidecar/kvsidecar/sidecar/sidecartest"
)

// TestMain lets the test binary act as a function process: with
// KV_TEST_PEER set it runs peerMain (under whatever uid the test gave it)
// instead of the tests.
func TestMain(m *testing.M) {
	switch os.Getenv("KV_TEST_PEER") {
	case "":
	case "flood":
		os.Exit(floodMain())
	default:
		os.Exit(peerMain())
	}
	os.Exit(m.Run())
}

// peerReport is what a peer process prints: what it could see and do.
type peerReport struct {
	UID       int               `json:"uid"`
	DialError string            `json:"dial_error,omitempty"`
	Forbidden bool              `json:"forbidden,omitempty"`
	Project   string            `json:"project,omitempty"`
	Keys      []string          `json:"keys,omitempty"`
	Values    map[string]string `json:"values,omitempty"`
	// Took is how long it took from dialing to having listed, in ms.
	Took float64 `json:"took_ms"`
}

// peerMain connects to $KV_SOCKET, writes KV_TEST_WRITE (key=value pairs,
// comma separated), then reports every key it can list with its value.
func peerMain() int {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rep := peerReport{UID: os.Getuid()}
	start := time.Now()
	defer func() {
		rep.Took = float64(time.Since(start).Microseconds()) / 1000
		json.NewEncoder(os.Stdout).Encode(rep)
	}()
	c, err := client.Dial(ctx, "")
	if err != nil {
		rep.DialError = err.Error()
		rep.Forbidden = errors.Is(err, client.ErrForbidden)
		return 0
	}
	defer c.Close()
	rep.Project = c.Project()
	for _, kv := range strings.Split(os.Getenv("KV_TEST_WRITE"), ",") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			if err := c.Set(ctx, k, v, 0); err != nil {
				fmt.Fprintln(os.Stderr, "set:", err)
				return 1
			}
		}
	}
	page, err := c.List(ctx, client.ListOptions{Values: true})
	if err != nil {
		fmt.Fprintln(os.Stderr, "list:", err)
		return 1
	}
	rep.Values = map[string]string{}
	for i, k := range page.Keys {
		rep.Keys = append(rep.Keys, k)
		var s string
		json.Unmarshal(page.Values[i], &s)
		rep.Values[k] = s
	}
	return 0
}

// runPeer runs this test binary as a peer process under uid.
func runPeer(t *testing.T, bin, socket string, uid uint32, writes string) peerReport {
	t.Helper()
	cmd := exec.Command(bin, "-test.run=^$")
	cmd.Env = append(os.Environ(), "KV_TEST_PEER=1", "KV_SOCKET="+socket, "KV_TEST_WRITE="+writes, "GOCOVERDIR=")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
	cmd.Dir = "/"
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("peer uid %d: %v\n%s", uid, err, stderr.String())
	}
	var rep peerReport
	if err := json.Unmarshal(out, &rep); err != nil {
		t.Fatalf("peer uid %d printed %q: %v", uid, out, err)
	}
	if rep.UID != int(uid) {
		t.Fatalf("peer ran as uid %d, want %d", rep.UID, uid)
	}
	return rep
}

// TestIsolationByPeerCredentials runs function processes under real,
// distinct uids against a daemon with a uid map: each sees only its own
// project's keys, and unmapped or system uids are refused.
func TestIsolationByPeerCredentials(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to start processes under other uids")
	}
	const (
		uidA, uidB, uidUnmapped, uidSystem = 41001, 41002, 41003, 41010
	)
	dir, err := os.MkdirTemp("", "kvsiso")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	// The peers run this test binary, so it must be readable by them.
	bin := filepath.Join(dir, "peer")
	copyFile(t, os.Args[0], bin, 0o755)

	uidMap := filepath.Join(dir, "uids")
	writeFile(t, uidMap, fmt.Sprintf("# test map\n%d alpha\n%d-%d beta  # a range\n%d system\n", uidA, uidB, uidB, uidSystem))
	d := sidecartest.Start(t, sidecartest.Options{UIDMap: uidMap, Socket: filepath.Join(dir, "kv.sock")})

	a := runPeer(t, bin, d.Socket, uidA, "owner=alpha,a-only=1")
	if a.Project != "alpha" || strings.Join(a.Keys, ",") != "a-only,owner" || a.Values["owner"] != "alpha" {
		t.Fatalf("uid %d: %+v", uidA, a)
	}
	b := runPeer(t, bin, d.Socket, uidB, "owner=beta")
	if b.Project != "beta" || strings.Join(b.Keys, ",") != "owner" || b.Values["owner"] != "beta" {
		t.Fatalf("uid %d sees %+v; want only its own key", uidB, b)
	}
	a = runPeer(t, bin, d.Socket, uidA, "")
	if a.Values["owner"] != "alpha" || len(a.Keys) != 2 {
		t.Fatalf("uid %d after beta wrote: %+v", uidA, a)
	}

	u := runPeer(t, bin, d.Socket, uidUnmapped, "x=1")
	if !u.Forbidden || !strings.Contains(u.DialError, fmt.Sprintf("uid %d is not in the uid map", uidUnmapped)) {
		t.Fatalf("unmapped uid: %+v", u)
	}
	s := runPeer(t, bin, d.Socket, uidSystem, "x=1")
	if !s.Forbidden || !strings.Contains(s.DialError, "system project") {
		t.Fatalf("system uid: %+v", s)
	}

	// SIGHUP-style reload maps the new uid; the others keep theirs.
	writeFile(t, uidMap, fmt.Sprintf("%d alpha\n%d beta\n%d gamma\n", uidA, uidB, uidUnmapped))
	d.Reload()
	deadline := time.Now().Add(5 * time.Second)
	for {
		u = runPeer(t, bin, d.Socket, uidUnmapped, "")
		if u.Project == "gamma" || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if u.Project != "gamma" || len(u.Keys) != 0 {
		t.Fatalf("after reload, uid %d: %+v", uidUnmapped, u)
	}
}

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
}

func writeFile(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}
