package export_test

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/kvsidecar/kvsidecar/admin/export"
	"github.com/kvsidecar/kvsidecar/store"
)

// FuzzRoundTrip writes an entry and reads it back: every key and every
// value must come back byte for byte, with its expiry.
func FuzzRoundTrip(f *testing.F) {
	for _, seed := range []struct{ key, value string }{
		{"k", `{"a": 1}`}, {"k", " 1"}, {"k", "\xff"}, {"k", `"\ud800"`}, {"k", ""},
		{"é\x00\"<>&\u2028", "null"}, {"k", "1e999"}, {"k", "[1,\t2]"}, {"k", "\"\x01\""},
	} {
		f.Add(seed.key, []byte(seed.value), int64(1767225600123))
	}
	f.Fuzz(func(t *testing.T, key string, value []byte, expiresMs int64) {
		if !utf8.ValidString(key) {
			t.Skip("keys are valid UTF-8")
		}
		var expires time.Time
		if expiresMs > 0 && expiresMs < 253402300799000 { // up to year 9999
			expires = time.UnixMilli(expiresMs).UTC()
		}
		var doc bytes.Buffer
		w, err := export.NewWriter(&doc, export.Header{Project: "p", ExportedAt: time.Unix(0, 0)})
		if err != nil {
			t.Fatal(err)
		}
		in := store.Entry{Key: key, Value: value, Expires: expires}
		if err := w.Write(in); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		if !utf8.Valid(doc.Bytes()) {
			t.Fatalf("the document is not UTF-8: %q", doc.Bytes())
		}
		r, err := export.NewReader(&doc, 0)
		if err != nil {
			t.Fatalf("NewReader: %v\n%s", err, doc.Bytes())
		}
		if h, ok := r.Header(); !ok || h.Project != "p" {
			t.Fatalf("Header = %+v, %v", h, ok)
		}
		out, err := r.Next()
		if err != nil {
			t.Fatalf("Next: %v\n%s", err, doc.Bytes())
		}
		if out.Key != key || !bytes.Equal(out.Value, value) || !out.Expires.Equal(expires) {
			t.Fatalf("read back {%q %q %v}, wrote {%q %q %v}", out.Key, out.Value, out.Expires, key, value, expires)
		}
		if _, err := r.Next(); err != io.EOF {
			t.Fatalf("Next after the last entry = %v, want io.EOF", err)
		}
	})
}

func TestReaderUnderlyingErrorIsNotAFormatError(t *testing.T) {
	broken := io.MultiReader(strings.NewReader(`{"a":1,`), errReader{})
	r, err := export.NewReader(broken, 0)
	if err != nil {
		t.Fatal(err)
	}
	r.Next()
	_, err = r.Next()
	if err == nil || errors.Is(err, export.ErrFormat) || !errors.Is(err, errDisk) {
		t.Fatalf("Next over a failing reader = %v, want the reader's error, not a format error", err)
	}
}

var errDisk = errors.New("disk on fire")

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errDisk }

// FuzzReader feeds the reader arbitrary documents: it must end every one
// with io.EOF or an error, never a panic or a loop. (It streams, so the
// entries before an error are returned; the import writes them or, in a
// dry run, only counts them.)
func FuzzReader(f *testing.F) {
	for _, seed := range []string{
		`{"a":1,"b":[1,2]}`, `{}`, `[]`, ``, `{"format":"kvsidecar-export","version":1,"entries":[]}`,
		`{"format":"kvsidecar-export","version":1,"project":"p","exported_at":"2026-01-01T00:00:00Z","entries":[{"key":"k","value":1,"expires_at":null}]}`,
		`{"format":"kvsidecar-export","entries":[{"key":"k","value_base64":"AA==","expires_at":"2026-01-01T00:00:00.5Z"}]} x`,
		`{"format":"other","x":1}`, `{"a":`, `{"a":1}}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, doc []byte) {
		r, err := export.NewReader(bytes.NewReader(doc), 1<<16)
		if err != nil {
			return
		}
		for i := 0; ; i++ {
			if i > len(doc) {
				t.Fatalf("more entries than bytes in %q", doc)
			}
			if _, err := r.Next(); err != nil {
				return
			}
		}
	})
}
