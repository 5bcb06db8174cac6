package admin

import (
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"go.uber.org/zap"

	"github.com/kvsidecar/kvsidecar/admin/export"
	"github.com/kvsidecar/kvsidecar/store"
)

// Export and import. Both stream: export writes each page of entries as
// it reads it; import reads the body entry by entry and writes batches of
// at most Config.ImportBatch entries and Config.ImportBatchBytes bytes, each
// one atomic store write. Neither holds more than a page or a batch.

// export streams the project's export document. An export is not a
// snapshot: it reads the project page by page in key order, so a write
// during the export may or may not be in it. If reading fails after the
// response has started, the document is left unfinished (invalid JSON),
// so an import of it fails instead of taking it for the whole project.
func (s *Server) export(req *request) error {
	ctx := req.r.Context()
	u, err := s.st.ProjectUsage(ctx, req.project)
	if err != nil {
		return err
	}
	// The first page is read before the response starts, so that a store
	// that cannot answer still gets a JSON error.
	opts := store.ListOptions{Values: true, Limit: exportPage}
	page, err := s.st.List(ctx, req.project, opts)
	if err != nil {
		return err
	}
	h := req.w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{
		"filename": strings.ReplaceAll(req.project, "/", "_") + ".kvsidecar.json",
	}))
	h.Set("X-Kvsidecar-Entries", strconv.FormatInt(u.Entries, 10))
	req.w.WriteHeader(http.StatusOK)
	ew, err := export.NewWriter(req.w, export.Header{Project: req.project, ExportedAt: s.cfg.Now()})
	if err != nil {
		s.log.Error("export not started", zap.String("project", req.project), zap.Error(err))
		return nil
	}
	written := 0
	for {
		for _, e := range page.Entries {
			if err := ew.Write(e); err != nil {
				return nil // the caller has gone
			}
		}
		written += len(page.Entries)
		if !page.More {
			break
		}
		opts.After = page.Entries[len(page.Entries)-1].Key
		if page, err = s.st.List(ctx, req.project, opts); err != nil {
			s.log.Error("export cut short; the document is left unfinished",
				zap.String("project", req.project), zap.Int("entries_written", written), zap.Error(err))
			return nil
		}
	}
	_ = ew.Close() // a write error means the caller has gone
	return nil
}

// importResult is the import's answer.
type importResult struct {
	Imported       int  `json:"imported"`
	SkippedExpired int  `json:"skipped_expired"`
	DryRun         bool `json:"dry_run"`
	Replaced       bool `json:"replaced"`
}

func boolParam(q url.Values, name string) (bool, error) {
	if !q.Has(name) {
		return false, nil
	}
	v := q.Get(name)
	if v == "" {
		return true, nil // ?dry_run
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, badRequest("%s=%q: want true or false", name, v)
	}
	return b, nil
}

// importProject reads an export document or a plain object and writes it.
// With dry_run it reads and checks the whole document and writes nothing.
// With replace it clears the project first. It stops at the first error —
// a bad entry or a quota refusal — and says how far it got.
func (s *Server) importProject(req *request) error {
	err := s.importBody(req)
	if err != nil {
		// Read what the client is still sending before answering: a
		// server that closes a connection with unread data in it resets
		// the connection, and the client may lose the answer saying how
		// far the import got.
		_, _ = io.Copy(io.Discard, req.r.Body)
	}
	return err
}

func (s *Server) importBody(req *request) error {
	q := req.r.URL.Query()
	replace, err := boolParam(q, "replace")
	if err != nil {
		return err
	}
	dryRun, err := boolParam(q, "dry_run")
	if err != nil {
		return err
	}
	ctx := req.r.Context()
	res := importResult{DryRun: dryRun}
	failed := func(err error, entry int) error {
		e := storeErr(err)
		if errors.Is(err, export.ErrFormat) {
			e = badRequest("%v", err)
		}
		if e == nil {
			return err
		}
		if e.code == codeQuotaExceeded {
			e.message = fmt.Sprintf("%s; stopped at entry %d after importing %d", e.message, entry, res.Imported)
		}
		imported := res.Imported
		if dryRun {
			imported = 0 // counted, never written
		}
		e.extra = map[string]any{"imported": imported, "skipped_expired": res.SkippedExpired}
		return e
	}

	rd, err := export.NewReader(req.r.Body, s.maxEntryBytes)
	if err != nil {
		return failed(err, 1)
	}
	if replace && !dryRun {
		if _, err := s.st.Clear(ctx, req.project); err != nil {
			return err
		}
		res.Replaced = true
	}

	var (
		batch      []store.Entry
		batchBytes int
		first      int // the document's number of the batch's first entry
	)
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		n, err := s.st.Import(ctx, req.project, batch)
		if err != nil {
			return failed(err, first)
		}
		res.Imported += n
		clear(batch)
		batch, batchBytes = batch[:0], 0
		return nil
	}
	// stop writes what was read before a bad entry, then reports it.
	stop := func(err error, entry int) error {
		if ferr := flush(); ferr != nil {
			return ferr
		}
		return failed(err, entry)
	}
	for {
		e, err := rd.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		n := rd.Entries()
		if err != nil {
			return stop(err, n+1)
		}
		if err := s.limits.CheckKey(e.Key); err != nil {
			return stop(fmt.Errorf("entry %d: %w", n, err), n)
		}
		if err := s.limits.CheckValue(e.Value); err != nil {
			return stop(fmt.Errorf("entry %d (key %q): %w", n, e.Key, err), n)
		}
		if !e.Expires.IsZero() && !e.Expires.After(s.cfg.Now()) {
			res.SkippedExpired++
			continue
		}
		if dryRun {
			res.Imported++
			continue
		}
		if len(batch) == 0 {
			first = n
		}
		batch = append(batch, e)
		batchBytes += len(e.Key) + len(e.Value)
		if len(batch) == s.cfg.ImportBatch || batchBytes >= s.cfg.ImportBatchBytes {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if err := flush(); err != nil {
		return err
	}
	return req.ok(res)
}
