package admin

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/kvsidecar/kvsidecar/admin/export"
	"github.com/kvsidecar/kvsidecar/store"
)

// The endpoints of docs/ADMIN.md, in its order.

func (s *Server) whoami(req *request) error {
	if p := req.role.Project(); p != "" {
		return req.ok(map[string]string{"role": string(req.role), "project": p})
	}
	return req.ok(map[string]string{"role": string(req.role)})
}

// projectJSON is a project in the API's list.
type projectJSON struct {
	Name          string `json:"name"`
	UsageBytes    int64  `json:"usage_bytes"`
	Entries       int64  `json:"entries"`
	QuotaBytes    int64  `json:"quota_bytes"`
	QuotaOverride *int64 `json:"quota_override"`
}

func projectOf(u store.ProjectUsage) projectJSON {
	p := projectJSON{Name: u.Name, UsageBytes: u.Bytes, Entries: u.Entries, QuotaBytes: u.Quota}
	if u.Override > 0 {
		o := u.Override
		p.QuotaOverride = &o
	}
	return p
}

func (s *Server) projects(req *request) error {
	limit, err := req.limit()
	if err != nil {
		return err
	}
	after, err := req.cursor()
	if err != nil {
		return err
	}
	out := struct {
		Projects   []projectJSON `json:"projects"`
		NextCursor string        `json:"next_cursor"`
	}{Projects: []projectJSON{}}
	if p := req.role.Project(); p != "" {
		// A project role sees its own project, on the first page.
		if after == "" {
			u, err := s.st.ProjectUsage(req.r.Context(), p)
			if err != nil {
				return err
			}
			out.Projects = append(out.Projects, projectOf(u))
		}
		return req.ok(out)
	}
	page, err := s.st.Projects(req.r.Context(), after, limit)
	if err != nil {
		return err
	}
	for _, u := range page.Projects {
		out.Projects = append(out.Projects, projectOf(u))
	}
	if len(page.Projects) > 0 {
		out.NextCursor = nextCursor(page.More, page.Projects[len(page.Projects)-1].Name)
	}
	return req.ok(out)
}

type settingsJSON struct {
	DefaultQuotaBytes *int64 `json:"default_quota_bytes"`
}

func (s *Server) getSettings(req *request) error {
	q, err := s.st.DefaultQuota(req.r.Context())
	if err != nil {
		return err
	}
	return req.ok(settingsJSON{DefaultQuotaBytes: &q})
}

func (s *Server) putSettings(req *request) error {
	var in settingsJSON
	if err := req.decode(&in); err != nil {
		return err
	}
	if in.DefaultQuotaBytes == nil || *in.DefaultQuotaBytes <= 0 {
		return badRequest("default_quota_bytes: want a number of bytes above 0")
	}
	if err := s.st.SetDefaultQuota(req.r.Context(), *in.DefaultQuotaBytes); err != nil {
		return err
	}
	return s.getSettings(req)
}

func (s *Server) putQuota(req *request) error {
	// A map, to tell {"quota_bytes": null} (remove the override) from {}.
	raw := map[string]json.RawMessage{}
	if err := req.decode(&raw); err != nil {
		return err
	}
	v, ok := raw["quota_bytes"]
	if !ok || len(raw) != 1 {
		return badRequest(`want {"quota_bytes": N} or {"quota_bytes": null}`)
	}
	var quota int64 // 0 removes the override
	if string(v) != "null" {
		if err := json.Unmarshal(v, &quota); err != nil || quota <= 0 {
			return badRequest("quota_bytes %s: want a whole number of bytes above 0, or null to remove the override", v)
		}
	}
	if err := s.st.SetQuota(req.r.Context(), req.project, quota); err != nil {
		return err
	}
	u, err := s.st.ProjectUsage(req.r.Context(), req.project)
	if err != nil {
		return err
	}
	p := projectOf(u)
	return req.ok(map[string]any{"name": p.Name, "quota_bytes": p.QuotaBytes, "quota_override": p.QuotaOverride})
}

// searchBudget bounds the time one keys request spends filling its page
// from a backend that cuts pages short (the embedded store, after scanning
// many keys that do not match): past it the page goes out with fewer keys and a
// cursor, so a search for a rare substring in a huge project answers
// within about a second, page after page, instead of scanning it all.
const searchBudget = time.Second

// expiringWindows are the windows of the usage endpoint.
var expiringWindows = [...]time.Duration{time.Hour, 24 * time.Hour}

func (s *Server) usage(req *request) error {
	ctx := req.r.Context()
	u, err := s.st.ProjectUsage(ctx, req.project)
	if err != nil {
		return err
	}
	exp, err := s.st.ExpiringBytes(ctx, req.project, expiringWindows[:]...)
	if err != nil {
		return err
	}
	p := projectOf(u)
	return req.ok(map[string]any{
		"name": p.Name, "usage_bytes": p.UsageBytes, "entries": p.Entries,
		"quota_bytes": p.QuotaBytes, "quota_override": p.QuotaOverride,
		"expiring_1h_bytes": exp[0], "expiring_24h_bytes": exp[1],
	})
}

func (s *Server) prefixes(req *request) error {
	limit, err := req.limit()
	if err != nil {
		return err
	}
	delim := ":"
	if q := req.r.URL.Query(); q.Has("delimiter") {
		delim = q.Get("delimiter")
	}
	groups, err := s.st.PrefixUsage(req.r.Context(), req.project, delim, limit)
	if err != nil {
		return err
	}
	type prefixJSON struct {
		Prefix  string `json:"prefix"`
		Bytes   int64  `json:"bytes"`
		Entries int64  `json:"entries"`
	}
	out := make([]prefixJSON, 0, len(groups))
	for _, g := range groups {
		out = append(out, prefixJSON{g.Prefix, g.Bytes, g.Entries})
	}
	return req.ok(map[string]any{"prefixes": out})
}

type keyJSON struct {
	Key  string `json:"key"`
	Size int64  `json:"size"`
}

func (s *Server) largest(req *request) error {
	limit, err := req.limit()
	if err != nil {
		return err
	}
	entries, err := s.st.LargestKeys(req.r.Context(), req.project, limit)
	if err != nil {
		return err
	}
	out := make([]keyJSON, 0, len(entries))
	for _, e := range entries {
		out = append(out, keyJSON{e.Key, e.Size})
	}
	return req.ok(map[string]any{"keys": out})
}

func (s *Server) keys(req *request) error {
	limit, err := req.limit()
	if err != nil {
		return err
	}
	after, err := req.cursor()
	if err != nil {
		return err
	}
	q := req.r.URL.Query()
	opts := store.SearchOptions{Prefix: q.Get("prefix"), Search: q.Get("search"), After: after, Limit: limit}
	// A backend may cut a page short after scanning many keys; the page is
	// filled from further calls, within searchBudget, before it is sent.
	var entries []store.Entry
	next := ""
	deadline := time.Now().Add(searchBudget)
	for {
		page, err := s.st.SearchKeys(req.r.Context(), req.project, opts)
		if err != nil {
			return err
		}
		entries, next = append(entries, page.Entries...), page.Next
		if next == "" || len(entries) >= limit || time.Now().After(deadline) {
			break
		}
		opts.After, opts.Limit = next, limit-len(entries)
	}
	type entryJSON struct {
		Key       string  `json:"key"`
		Size      int64   `json:"size"`
		ExpiresAt *string `json:"expires_at"`
	}
	out := struct {
		Keys       []entryJSON `json:"keys"`
		NextCursor string      `json:"next_cursor"`
	}{Keys: make([]entryJSON, 0, len(entries)), NextCursor: nextCursor(next != "", next)}
	for _, e := range entries {
		out.Keys = append(out.Keys, entryJSON{e.Key, e.Size, timeOrNil(e.Expires)})
	}
	return req.ok(out)
}

// entryKey reads the key parameter.
func (s *Server) entryKey(req *request) (string, error) {
	q := req.r.URL.Query()
	if !q.Has("key") {
		return "", badRequest("missing the key parameter: ?key=K")
	}
	key := q.Get("key")
	if err := s.limits.CheckKey(key); err != nil {
		return "", badRequest("key: %v", err)
	}
	return key, nil
}

func (s *Server) getEntry(req *request) error {
	key, err := s.entryKey(req)
	if err != nil {
		return err
	}
	e, found, err := s.st.Entry(req.r.Context(), req.project, key)
	if err != nil {
		return err
	}
	if !found {
		return apiErr(http.StatusNotFound, codeNotFound, fmt.Sprintf("no key %q in project %q", key, req.project))
	}
	out := map[string]any{"key": e.Key, "size": e.Size, "expires_at": timeOrNil(e.Expires)}
	if export.IsJSON(e.Value) {
		out["value"] = json.RawMessage(e.Value)
	} else {
		out["value_base64"] = base64.StdEncoding.EncodeToString(e.Value)
	}
	return req.ok(out)
}

func (s *Server) putEntry(req *request) error {
	key, err := s.entryKey(req)
	if err != nil {
		return err
	}
	var in struct {
		Value       json.RawMessage `json:"value"`
		ValueBase64 *string         `json:"value_base64"`
		TTLMs       int64           `json:"ttl_ms"`
	}
	if err := req.decode(&in); err != nil {
		return err
	}
	var value []byte
	switch {
	case in.Value != nil && in.ValueBase64 != nil:
		return badRequest(`give "value" or "value_base64", not both`)
	case in.Value != nil:
		value = in.Value
	case in.ValueBase64 != nil:
		if value, err = base64.StdEncoding.DecodeString(*in.ValueBase64); err != nil {
			return badRequest("value_base64 is not base64: %v", err)
		}
	default:
		return badRequest(`missing "value" (JSON) or "value_base64"`)
	}
	if in.TTLMs < 0 {
		return badRequest("ttl_ms is %d: want 0 (no expiry) or more", in.TTLMs)
	}
	ttl := time.Duration(in.TTLMs) * time.Millisecond
	if err := s.st.Set(req.r.Context(), req.project, key, value, ttl); err != nil {
		return err
	}
	out := map[string]any{"key": key, "size": store.EntrySize(key, value), "expires_at": nil}
	// Report the expiry the store recorded, by its clock.
	if e, found, err := s.st.Entry(req.r.Context(), req.project, key); err == nil && found {
		out["size"], out["expires_at"] = e.Size, timeOrNil(e.Expires)
	} else if ttl > 0 {
		out["expires_at"] = timeOrNil(s.cfg.Now().Add(ttl))
	}
	return req.ok(out)
}

func (s *Server) deleteEntry(req *request) error {
	key, err := s.entryKey(req)
	if err != nil {
		return err
	}
	existed, err := s.st.Delete(req.r.Context(), req.project, key)
	if err != nil {
		return err
	}
	return req.ok(map[string]bool{"deleted": existed})
}

func (s *Server) deleteMatching(req *request) error {
	var in struct {
		Prefix string `json:"prefix"`
		Search string `json:"search"`
		DryRun bool   `json:"dry_run"`
	}
	if err := req.decode(&in); err != nil {
		return err
	}
	ctx := req.r.Context()
	var matched, deleted int64
	opts := store.SearchOptions{Prefix: in.Prefix, Search: in.Search, Limit: store.MaxBatchItems}
	for {
		page, err := s.st.SearchKeys(ctx, req.project, opts)
		if err != nil {
			return s.partial(err, "matched", matched, "deleted", deleted)
		}
		matched += int64(len(page.Entries))
		if !in.DryRun && len(page.Entries) > 0 {
			keys := make([]string, len(page.Entries))
			for i, e := range page.Entries {
				keys[i] = e.Key
			}
			existed, err := s.st.DeleteMany(ctx, req.project, keys)
			if err != nil {
				return s.partial(err, "matched", matched, "deleted", deleted)
			}
			for _, ok := range existed {
				if ok {
					deleted++
				}
			}
		}
		if page.Next == "" {
			break
		}
		opts.After = page.Next
	}
	return req.ok(map[string]int64{"matched": matched, "deleted": deleted})
}

// partial adds how far a bulk operation got to its error.
func (s *Server) partial(err error, kv ...any) error {
	e := storeErr(err)
	if e == nil {
		return err
	}
	e.extra = map[string]any{}
	for i := 0; i+1 < len(kv); i += 2 {
		e.extra[kv[i].(string)] = kv[i+1]
	}
	return e
}

func (s *Server) clear(req *request) error {
	var in struct {
		Confirm *string `json:"confirm"`
	}
	if err := req.decode(&in); err != nil {
		return err
	}
	if in.Confirm == nil || *in.Confirm != req.project {
		return badRequest(`clearing needs {"confirm": %q}: the project's name`, req.project)
	}
	if _, err := s.st.Clear(req.r.Context(), req.project); err != nil {
		return err
	}
	return req.ok(map[string]bool{"cleared": true})
}
