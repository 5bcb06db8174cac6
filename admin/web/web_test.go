package web_test

import (
	"github.com/kvsidecar/kvsidecar/admin/web"
	"io/fs"
	"regexp"
	"strings"
	"testing"
)

// The page must work offline: everything it loads is in web.FS, and nothing is
// fetched from another origin.
func TestPageLoadsOnlyEmbeddedFiles(t *testing.T) {
	refs := map[string][]*regexp.Regexp{
		"index.html": {regexp.MustCompile(`(?:src|href)="([^"#][^"]*)"`)},
		"style.css":  {regexp.MustCompile(`url\(\s*['"]?([^'")]+)`), regexp.MustCompile(`@import\s+['"]([^'"]+)`)},
	}
	jsImport := regexp.MustCompile(`(?m)^\s*(?:import|export)\b[^'"]*from\s+'([^']+)'|import\(\s*'([^']+)'`)
	files, err := fs.Glob(web.FS, "*.js")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		refs[f] = []*regexp.Regexp{jsImport}
	}

	seen := 0
	for name, patterns := range refs {
		data, err := fs.ReadFile(web.FS, name)
		if err != nil {
			t.Fatalf("read %s from the embedded files: %v", name, err)
		}
		for _, re := range patterns {
			for _, m := range re.FindAllStringSubmatch(string(data), -1) {
				ref := m[1]
				if ref == "" && len(m) > 2 {
					ref = m[2]
				}
				seen++
				if strings.Contains(ref, "//") || strings.HasPrefix(ref, "/") {
					t.Errorf("%s loads %q, which is not one of the embedded files", name, ref)
					continue
				}
				if _, err := fs.Stat(web.FS, strings.TrimPrefix(ref, "./")); err != nil {
					t.Errorf("%s loads %q, which is missing from the embedded files: %v", name, ref, err)
				}
			}
		}
	}
	if seen < 5 {
		t.Fatalf("found only %d references in the page; the patterns no longer match its files", seen)
	}
}
