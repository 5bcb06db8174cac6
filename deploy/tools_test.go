package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
)

// requireTool returns the path of an external program a test needs. Under
// CI (CI=true) a missing program fails the test, so CI can never pass
// without checking the deployment for real; elsewhere the test is skipped
// with a message saying what to install.
func requireTool(t *testing.T, name, pkg string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err == nil {
		return path
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is not installed (%s); CI=true, so the deployment checks that need it cannot be skipped", name, pkg)
	}
	t.Skipf("%s is not installed (%s); skipping (with CI=true this fails)", name, pkg)
	return ""
}

// repoRoot is the repository's root directory (the parent of deploy/).
func repoRoot(t *testing.T) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("cannot locate the test's source file")
	}
	return filepath.Dir(filepath.Dir(file))
}
