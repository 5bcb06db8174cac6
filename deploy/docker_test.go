package deploy

import (
	"bufio"
	"bytes"
	"debug/elf"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
)

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	cmd  string // upper case: FROM, RUN, COPY, ...
	args string
}

func parseDockerfile(t *testing.T, path string) []instruction {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []instruction
	var cur strings.Builder
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if cur.Len() == 0 && (line == "" || strings.HasPrefix(line, "#")) {
			continue
		}
		if strings.HasSuffix(line, "\\") {
			cur.WriteString(strings.TrimSuffix(line, "\\") + " ")
			continue
		}
		cur.WriteString(line)
		cmd, args, _ := strings.Cut(cur.String(), " ")
		out = append(out, instruction{cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args)})
		cur.Reset()
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// shellWords splits a command line as sh would for the quoting the
// Dockerfile uses: words separated by blanks, double quotes grouping.
func shellWords(s string) ([]string, error) {
	var words []string
	var w strings.Builder
	inWord, quoted := false, false
	for _, r := range s {
		switch {
		case r == '"':
			quoted = !quoted
			inWord = true
		case (r == ' ' || r == '\t') && !quoted:
			if inWord {
				words = append(words, w.String())
				w.Reset()
				inWord = false
			}
		default:
			w.WriteRune(r)
			inWord = true
		}
	}
	if quoted {
		return nil, fmt.Errorf("unbalanced quote in %q", s)
	}
	if inWord {
		words = append(words, w.String())
	}
	return words, nil
}

// imageBuild is what the Dockerfile's build stage runs, as this test
// understood it.
type imageBuild struct {
	env      []string // VAR=value before the command
	args     []string // go build's arguments, ${VERSION} substituted
	outDir   string   // the -o directory in the image
	packages []string // ./cmd/... built
}

const testVersion = "1.2.3-deploytest"

func dockerfileBuild(t *testing.T, ins []instruction) imageBuild {
	t.Helper()
	var runs []string
	for _, in := range ins {
		if in.cmd == "RUN" && strings.Contains(in.args, "go build") {
			runs = append(runs, in.args)
		}
	}
	if len(runs) != 1 {
		t.Fatalf("want one RUN of go build in the Dockerfile, found %d", len(runs))
	}
	words, err := shellWords(strings.ReplaceAll(runs[0], "${VERSION}", testVersion))
	if err != nil {
		t.Fatal(err)
	}
	var b imageBuild
	i := 0
	for ; i < len(words) && strings.Contains(words[i], "="); i++ {
		b.env = append(b.env, words[i])
	}
	if i+1 >= len(words) || words[i] != "go" || words[i+1] != "build" {
		t.Fatalf("the build RUN is %q; want [VAR=value ...] go build ...", runs[0])
	}
	b.args = words[i+2:]
	for j := 0; j < len(b.args); j++ {
		switch {
		case b.args[j] == "-o" && j+1 < len(b.args):
			b.outDir = b.args[j+1]
			j++
		case strings.HasPrefix(b.args[j], "./"):
			b.packages = append(b.packages, b.args[j])
		}
	}
	return b
}

func TestDockerfile(t *testing.T) {
	root := repoRoot(t)
	ins := parseDockerfile(t, filepath.Join(root, "deploy/docker/Dockerfile"))
	b := dockerfileBuild(t, ins)

	if !contains(b.env, "CGO_ENABLED=0") {
		t.Errorf("the build runs with %v; want CGO_ENABLED=0 (a static binary for an empty base image)", b.env)
	}
	if !contains(b.args, "-trimpath") {
		t.Errorf("go build %v: want -trimpath (no build machine paths in the binary)", b.args)
	}
	if !strings.Contains(strings.Join(b.args, " "), "-X main.version="+testVersion) {
		t.Errorf("go build %v: want the version stamped with -X main.version=${VERSION}", b.args)
	}
	if !strings.HasSuffix(b.outDir, "/") {
		t.Errorf("go build -o %q: want a directory (ending in /) holding one binary per package", b.outDir)
	}

	// The builder's Go is the one go.mod asks for.
	goMod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	goVersion := regexp.MustCompile(`(?m)^go (\S+)$`).FindSubmatch(goMod)
	var froms, users []string
	copied := map[string]string{} // image path -> build-stage path
	var entrypoint []string
	for _, in := range ins {
		switch in.cmd {
		case "ARG":
			if name, def, ok := strings.Cut(in.args, "="); ok && name == "GO_VERSION" && (goVersion == nil || def != string(goVersion[1])) {
				t.Errorf("ARG GO_VERSION=%s, but go.mod says go %s", def, goVersion[1])
			}
		case "FROM":
			froms = append(froms, in.args)
		case "USER":
			users = append(users, in.args)
		case "COPY":
			f := strings.Fields(in.args)
			if len(f) == 3 && f[0] == "--from=build" {
				copied[f[2]] = f[1]
			}
		case "ENTRYPOINT":
			if err := json.Unmarshal([]byte(in.args), &entrypoint); err != nil {
				t.Errorf("ENTRYPOINT %s: want the exec (JSON) form, so signals reach the daemon: %v", in.args, err)
			}
		}
	}
	if len(froms) != 2 || !strings.HasSuffix(froms[0], " AS build") || froms[1] != "scratch" {
		t.Errorf("stages %q: want a build stage (… AS build) and a scratch runtime", froms)
	}
	if len(users) != 1 || !regexp.MustCompile(`^[1-9][0-9]*:[1-9][0-9]*$`).MatchString(users[0]) {
		t.Errorf("USER %q: want one numeric non-root uid:gid (runAsNonRoot can verify only a number)", users)
	}
	for _, pkg := range b.packages {
		name := filepath.Base(pkg)
		if got := copied["/usr/local/bin/"+name]; got != b.outDir+name {
			t.Errorf("%s is built to %s but /usr/local/bin/%s comes from %q", pkg, b.outDir+name, name, got)
		}
	}
	if len(entrypoint) != 1 || copied[entrypoint[0]] == "" {
		t.Errorf("ENTRYPOINT %q is not a binary the image holds (%v)", entrypoint, copied)
	}

	// The same command, here: it must build, and give static, trimmed,
	// version-stamped binaries.
	dir := buildImageBinaries(t)
	for _, pkg := range b.packages {
		bin := filepath.Join(dir, filepath.Base(pkg))
		f, err := elf.Open(bin)
		if err != nil {
			t.Fatalf("%s: %v", bin, err)
		}
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				t.Errorf("%s has a program interpreter: it is dynamically linked and cannot run on scratch", pkg)
			}
		}
		f.Close()
		raw, err := os.ReadFile(bin)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(raw, []byte(root)) {
			t.Errorf("%s holds the build directory %s: -trimpath did not apply", pkg, root)
		}
		// The daemon reports the stamped version (kvctl has no version of
		// its own; -X leaves a binary without main.version as it is).
		if name := filepath.Base(pkg); name == "kvsidecar" {
			out, err := exec.Command(bin, "--version").CombinedOutput()
			if err != nil || strings.TrimSpace(string(out)) != "kvsidecar "+testVersion {
				t.Errorf("kvsidecar --version: %q, %v; want \"kvsidecar %s\"", out, err, testVersion)
			}
		}
		info, err := exec.Command("go", "version", "-m", bin).CombinedOutput()
		if err != nil {
			t.Fatalf("go version -m %s: %v\n%s", bin, err, info)
		}
		for _, want := range []string{"-trimpath=true", "CGO_ENABLED=0"} {
			if !bytes.Contains(info, []byte(want)) {
				t.Errorf("%s was not built with %s:\n%s", pkg, want, info)
			}
		}
	}
}

var (
	imageOnce sync.Once
	imageDir  string
	imageErr  error
)

// buildImageBinaries runs the Dockerfile's go build (same environment and
// flags, into a temporary directory instead of /out/) once per test binary
// and returns the directory holding the binaries. The Prometheus test runs
// the daemon built here: the image's binary, not a test build.
func buildImageBinaries(t *testing.T) string {
	t.Helper()
	imageOnce.Do(func() {
		root := repoRoot(t)
		b := dockerfileBuild(t, parseDockerfile(t, filepath.Join(root, "deploy/docker/Dockerfile")))
		imageDir, imageErr = os.MkdirTemp("", "kvsidecar-image")
		if imageErr != nil {
			return
		}
		args := []string{"build"}
		for _, a := range b.args {
			if a == b.outDir {
				a = imageDir + "/"
			}
			args = append(args, a)
		}
		cmd := exec.Command("go", args...)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), b.env...)
		if out, err := cmd.CombinedOutput(); err != nil {
			imageErr = fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	})
	if imageErr != nil {
		t.Fatal(imageErr)
	}
	return imageDir
}

func TestMain(m *testing.M) {
	code := m.Run()
	if imageDir != "" {
		os.RemoveAll(imageDir)
	}
	os.Exit(code)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestExampleFunctionDockerfile checks the demo function's image recipe
// against the repository: what it copies exists, it installs from the
// lock file with the client copied in, and it runs as a non-root uid on
// the port the example manifests give it.
func TestExampleFunctionDockerfile(t *testing.T) {
	root := repoRoot(t)
	ins := parseDockerfile(t, filepath.Join(root, "deploy/docker/kv-test-function.Dockerfile"))
	var froms, users, workdirs []string
	var entrypoint []string
	env := map[string]string{}
	for _, in := range ins {
		switch in.cmd {
		case "ARG":
			if name, def, ok := strings.Cut(in.args, "="); ok && name == "NODE_VERSION" && !regexp.MustCompile(`^20\.[0-9]+\.[0-9]+$`).MatchString(def) {
				t.Errorf("ARG NODE_VERSION=%s: want a pinned Node 20 release (the client's engines and CI run 20)", def)
			}
		case "FROM":
			froms = append(froms, in.args)
		case "WORKDIR":
			workdirs = append(workdirs, in.args)
		case "USER":
			users = append(users, in.args)
		case "ENV":
			for _, kv := range strings.Fields(in.args) {
				k, v, _ := strings.Cut(kv, "=")
				env[k] = v
			}
		case "COPY":
			f := strings.Fields(in.args)
			if len(f) == 2 {
				if _, err := os.Stat(filepath.Join(root, f[0])); err != nil {
					t.Errorf("COPY %s: %v", f[0], err)
				}
			}
		case "RUN":
			dir, _, ok := strings.Cut(strings.TrimPrefix(in.args, "cd "), " && npm ci")
			if !ok {
				t.Errorf("RUN %q: want cd DIR && npm ci …", in.args)
				continue
			}
			for _, f := range []string{"package-lock.json", ".npmrc"} {
				if _, err := os.Stat(filepath.Join(root, dir, f)); err != nil {
					t.Errorf("npm ci in %s needs %s: %v", dir, f, err)
				}
			}
			if npmrc, _ := os.ReadFile(filepath.Join(root, dir, ".npmrc")); !bytes.Contains(npmrc, []byte("install-links=true")) {
				t.Errorf("%s/.npmrc does not set install-links=true: the client would be a symlink out of the image's app directory", dir)
			}
		case "ENTRYPOINT":
			if err := json.Unmarshal([]byte(in.args), &entrypoint); err != nil {
				t.Errorf("ENTRYPOINT %s: %v", in.args, err)
			}
		}
	}
	if len(froms) != 2 || froms[0] != "node:${NODE_VERSION}-bookworm-slim AS build" || froms[1] != "node:${NODE_VERSION}-bookworm-slim" {
		t.Errorf("stages %q", froms)
	}
	if len(users) != 1 || !regexp.MustCompile(`^[1-9][0-9]*:[1-9][0-9]*$`).MatchString(users[0]) {
		t.Errorf("USER %q: want one numeric non-root uid:gid", users)
	}
	if len(entrypoint) != 2 || entrypoint[0] != "node" {
		t.Fatalf("ENTRYPOINT %q: want node SCRIPT", entrypoint)
	}
	if _, err := os.Stat(filepath.Join(root, "examples/kv-test-function", entrypoint[1])); err != nil || workdirs[len(workdirs)-1] != "/app" {
		t.Errorf("ENTRYPOINT runs %s in %s: %v", entrypoint[1], workdirs, err)
	}
	if env["PORT"] != "3000" {
		t.Errorf("ENV PORT=%q, the example manifests expose 3000", env["PORT"])
	}
}
