// Package admin is the operator's HTTP surface over a store.Store: a JSON
// API under /admin/api/v1/ (docs/ADMIN.md is its contract) and the web page
// at /admin/, embedded in the binary.
//
// Every API request carries a bearer token; the tokens file holds their
// SHA-256 hashes with a role, "admin" (every project and the global
// settings) or "project:NAME" (that project's keys, usage, export and
// import). There are no cookies, so a page of another origin cannot make a
// signed-in browser act (no CSRF surface). Request bodies are bounded,
// except imports, which stream with memory bounded per entry.
//
// The package also exports per-project usage gauges (UsageMetrics). They
// belong to the one admin instance of a cluster: every node daemon
// exporting the same cluster-wide numbers would duplicate them.
package admin

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/kvsidecar/kvsidecar/admin/web"
	"github.com/kvsidecar/kvsidecar/store"
)

// Defaults of Config.
const (
	// DefaultImportBatch is the most entries of one import batch (one
	// atomic store write). It is store.MaxBatchItems, the largest batch a
	// backend takes; DefaultImportBatchBytes usually ends a batch first.
	DefaultImportBatch = store.MaxBatchItems
	// DefaultImportBatchBytes bounds the keys and values of one import
	// batch: big enough that a batch of small entries is one commit, small
	// enough that the batch being built and the one being written stay a
	// few MiB of the daemon's memory.
	DefaultImportBatchBytes = 4 << 20
	// exportPage is the entries one export step reads with their values.
	// Values are at most 1 MiB by default, so a page is at most 64 MiB and
	// usually a few KiB; smaller pages would only add round trips.
	exportPage = 64
	// defaultPageLimit and maxPageLimit are the API's pagination bounds.
	defaultPageLimit = 100
	maxPageLimit     = store.MaxListLimit
)

// Config configures the admin handler.
type Config struct {
	// Tokens are the accepted tokens. Required; LoadTokens reads them.
	Tokens *Tokens
	// MaxBodyBytes bounds the body of every request but an import. 0 means
	// enough for the largest value the store takes, base64-encoded, plus
	// 64 KiB.
	MaxBodyBytes int64
	// ImportBatch and ImportBatchBytes bound one import batch. 0 means
	// DefaultImportBatch and DefaultImportBatchBytes.
	ImportBatch      int
	ImportBatchBytes int
	// Page is the web page's files, whose root holds index.html. nil means
	// the page built into the binary (package web).
	Page fs.FS
	// Now is the clock for exported_at and for skipping expired entries at
	// import. Default: time.Now. The store keeps its own clock for expiry.
	Now func() time.Time
}

func (c Config) withDefaults(limits store.Limits) Config {
	limits = limits.WithDefaults()
	if c.MaxBodyBytes <= 0 {
		c.MaxBodyBytes = base64Len(limits.MaxValueBytes) + 64<<10
	}
	if c.ImportBatch <= 0 || c.ImportBatch > store.MaxBatchItems {
		c.ImportBatch = DefaultImportBatch
	}
	if c.ImportBatchBytes <= 0 {
		c.ImportBatchBytes = DefaultImportBatchBytes
	}
	if c.Page == nil {
		c.Page = web.FS
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

func base64Len(n int) int64 { return int64(n+2) / 3 * 4 }

// Server is the admin HTTP handler.
type Server struct {
	cfg    Config
	st     store.Store
	log    *zap.Logger
	limits store.Limits
	mux    *http.ServeMux
	// maxEntryBytes bounds one import entry as written: a key of escapes
	// (6 bytes per byte), a base64 value, and room for the member names.
	maxEntryBytes int64
}

// New returns the admin handler over st. It fails without tokens.
func New(cfg Config, st store.Store, log *zap.Logger) (*Server, error) {
	if cfg.Tokens == nil || cfg.Tokens.Len() == 0 {
		return nil, errors.New("admin: no tokens: the admin API needs a tokens file")
	}
	if log == nil {
		log = zap.NewNop()
	}
	limits := st.Limits().WithDefaults()
	s := &Server{
		cfg:           cfg.withDefaults(limits),
		st:            st,
		log:           log,
		limits:        limits,
		mux:           http.NewServeMux(),
		maxEntryBytes: 6*int64(limits.MaxKeyBytes) + base64Len(limits.MaxValueBytes) + 64<<10,
	}
	s.routes()
	return s, nil
}

// ServeHTTP serves the page and the API.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// APIPrefix is the path under which the API is served.
const APIPrefix = "/admin/api/v1"

func (s *Server) routes() {
	page := http.StripPrefix("/admin/", http.FileServerFS(s.cfg.Page))
	s.mux.Handle("/admin/", pageOnly(page))
	s.mux.Handle("GET /admin", http.RedirectHandler("/admin/", http.StatusMovedPermanently))

	api := func(pattern string, need access, h func(*request) error) {
		method, path, _ := strings.Cut(pattern, " ")
		s.mux.Handle(method+" "+APIPrefix+path, s.endpoint(need, true, h))
	}
	api("GET /whoami", anyRole, s.whoami)
	api("GET /projects", anyRole, s.projects)
	api("GET /settings", adminOnly, s.getSettings)
	api("PUT /settings", adminOnly, s.putSettings)
	api("PUT /projects/{p}/quota", adminOnly, s.putQuota)
	api("GET /projects/{p}/usage", projectRole, s.usage)
	api("GET /projects/{p}/prefixes", projectRole, s.prefixes)
	api("GET /projects/{p}/largest", projectRole, s.largest)
	api("GET /projects/{p}/keys", projectRole, s.keys)
	api("GET /projects/{p}/entry", projectRole, s.getEntry)
	api("PUT /projects/{p}/entry", projectRole, s.putEntry)
	api("DELETE /projects/{p}/entry", projectRole, s.deleteEntry)
	api("POST /projects/{p}/delete-matching", projectRole, s.deleteMatching)
	api("POST /projects/{p}/clear", projectRole, s.clear)
	api("GET /projects/{p}/export", projectRole, s.export)
	// An import's body is not bounded: it streams, and the reader bounds
	// each entry instead.
	s.mux.Handle("POST "+APIPrefix+"/projects/{p}/import", s.endpoint(projectRole, false, s.importProject))
	s.mux.Handle(APIPrefix+"/", s.endpoint(anyRole, true, func(*request) error {
		return apiErr(http.StatusNotFound, codeNotFound, "no such endpoint (see docs/ADMIN.md)")
	}))
}

// pageOnly serves the page's files to GET and HEAD, revalidated on every
// load so a new binary's page is never mixed with an old one's.
func pageOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "the admin page takes GET", http.StatusMethodNotAllowed)
			return
		}
		w.Header().Set("Cache-Control", "no-cache")
		h.ServeHTTP(w, r)
	})
}

// access is what an endpoint requires of the caller's role.
type access int

const (
	anyRole     access = iota // any valid token
	projectRole               // a token that may reach the project {p}
	adminOnly                 // an admin token
)

// request is one API call being served.
type request struct {
	w       http.ResponseWriter
	r       *http.Request
	role    Role
	project string // {p}, for endpoints under /projects/{p}
}

// endpoint authenticates, checks the role, bounds the body (if bounded) and
// turns the handler's error into the contract's JSON error.
func (s *Server) endpoint(need access, bounded bool, h func(*request) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		req := &request{w: rec, r: r, project: r.PathValue("p")}
		// Refusals and changes are logged, with who and the outcome —
		// never a token, a key or a value: the path names the endpoint
		// and the project only.
		fields := func() []zap.Field {
			return []zap.Field{zap.String("method", r.Method), zap.String("path", r.URL.Path),
				zap.String("role", string(req.role)), zap.Int("status", rec.status), zap.String("remote", r.RemoteAddr)}
		}
		if err := s.authorize(req, need); err != nil {
			s.writeErr(req, err)
			s.log.Warn("admin request refused", fields()...)
			return
		}
		if bounded {
			r.Body = http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes)
		}
		if err := h(req); err != nil {
			s.writeErr(req, err)
		}
		if r.Method != http.MethodGet {
			s.log.Info("admin change", fields()...)
		}
	})
}

// statusRecorder remembers the status a handler wrote.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(status int) {
	r.status = status
	r.ResponseWriter.WriteHeader(status)
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

func (s *Server) authorize(req *request, need access) error {
	auth := req.r.Header.Get("Authorization")
	token, ok := strings.CutPrefix(auth, "Bearer ")
	if !ok || token == "" {
		req.w.Header().Set("WWW-Authenticate", `Bearer realm="kvsidecar admin"`)
		return apiErr(http.StatusUnauthorized, codeUnauthorized, "missing bearer token: send Authorization: Bearer <token>")
	}
	role, ok := s.cfg.Tokens.Lookup(token)
	if !ok {
		req.w.Header().Set("WWW-Authenticate", `Bearer realm="kvsidecar admin", error="invalid_token"`)
		return apiErr(http.StatusUnauthorized, codeUnauthorized, "unknown token")
	}
	req.role = role
	switch need {
	case adminOnly:
		if role != RoleAdmin {
			return apiErr(http.StatusForbidden, codeForbidden, "this needs an admin token; the token's role is "+string(role))
		}
	case projectRole:
		if err := store.CheckProject(req.project); err != nil {
			return apiErr(http.StatusBadRequest, codeBadRequest, err.Error())
		}
		if !role.mayReach(req.project) {
			return apiErr(http.StatusForbidden, codeForbidden, fmt.Sprintf("a token of role %s cannot reach project %q", role, req.project))
		}
	}
	return nil
}

// Error codes of the contract.
const (
	codeUnauthorized  = "unauthorized"
	codeForbidden     = "forbidden"
	codeNotFound      = "not_found"
	codeBadRequest    = "bad_request"
	codeQuotaExceeded = "quota_exceeded"
	codeTooLarge      = "too_large"
	codeUnavailable   = "unavailable"
	codeInternal      = "internal"
)

// apiError is an error with its HTTP status and code; extra members go
// next to "error" in the body (the import's "imported").
type apiError struct {
	status  int
	code    string
	message string
	extra   map[string]any
}

func (e *apiError) Error() string { return e.message }

func apiErr(status int, code, message string) *apiError {
	return &apiError{status: status, code: code, message: message}
}

func badRequest(format string, args ...any) *apiError {
	return apiErr(http.StatusBadRequest, codeBadRequest, fmt.Sprintf(format, args...))
}

// storeErr maps a store error to the contract's.
func storeErr(err error) *apiError {
	var apiE *apiError
	var maxErr *http.MaxBytesError
	switch {
	case errors.As(err, &apiE):
		return apiE
	case errors.As(err, &maxErr):
		return apiErr(http.StatusRequestEntityTooLarge, codeTooLarge, fmt.Sprintf("request body over %d bytes", maxErr.Limit))
	case errors.Is(err, store.ErrQuotaExceeded):
		return apiErr(http.StatusRequestEntityTooLarge, codeQuotaExceeded, err.Error())
	case errors.Is(err, store.ErrEmptyKey), errors.Is(err, store.ErrInvalidKey),
		errors.Is(err, store.ErrKeyTooLarge), errors.Is(err, store.ErrValueTooLarge),
		errors.Is(err, store.ErrNegativeTTL), errors.Is(err, store.ErrTooManyItems),
		errors.Is(err, store.ErrBadArgument):
		return apiErr(http.StatusBadRequest, codeBadRequest, err.Error())
	case errors.Is(err, store.ErrUnavailable), errors.Is(err, store.ErrBusy), errors.Is(err, store.ErrClosed):
		return apiErr(http.StatusServiceUnavailable, codeUnavailable, err.Error())
	}
	return nil
}

func (s *Server) writeErr(req *request, err error) {
	e := storeErr(err)
	if e == nil {
		if req.r.Context().Err() != nil {
			return // the caller has gone: nobody to answer
		}
		s.log.Error("admin request failed", zap.String("method", req.r.Method), zap.String("path", req.r.URL.Path), zap.Error(err))
		e = apiErr(http.StatusInternalServerError, codeInternal, "internal error (logged by the daemon)")
	}
	body := map[string]any{"error": map[string]string{"code": e.code, "message": e.message}}
	for k, v := range e.extra {
		body[k] = v
	}
	writeJSON(req.w, e.status, body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v) // a write error means the caller has gone
}

func (req *request) ok(v any) error {
	writeJSON(req.w, http.StatusOK, v)
	return nil
}

// decode reads a JSON body into v, refusing unknown fields and trailing
// data.
func (req *request) decode(v any) error {
	if ct := req.r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		return badRequest("Content-Type is %q, want application/json", ct)
	}
	dec := json.NewDecoder(req.r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var maxErr *http.MaxBytesError
		if errors.As(err, &maxErr) {
			return err
		}
		return badRequest("request body: %v", err)
	}
	if dec.More() {
		return badRequest("request body: data after the JSON object")
	}
	return nil
}

// limit reads the limit parameter: default 100, at most 1000.
func (req *request) limit() (int, error) {
	s := req.r.URL.Query().Get("limit")
	if s == "" {
		return defaultPageLimit, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > maxPageLimit {
		return 0, badRequest("limit %q: want a number from 1 to %d", s, maxPageLimit)
	}
	return n, nil
}

// cursor decodes the cursor parameter: the last name or key of the
// previous page, base64url-encoded so it is opaque and survives any bytes.
func (req *request) cursor() (string, error) {
	c := req.r.URL.Query().Get("cursor")
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return "", badRequest("cursor %q is not one this API returned", c)
	}
	return string(b), nil
}

func nextCursor(more bool, last string) string {
	if !more {
		return ""
	}
	return base64.RawURLEncoding.EncodeToString([]byte(last))
}

// timeOrNil is an expiry as the API writes it: RFC 3339 or null.
func timeOrNil(t time.Time) *string {
	if t.IsZero() {
		return nil
	}
	s := t.UTC().Format(time.RFC3339Nano)
	return &s
}
