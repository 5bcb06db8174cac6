package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// api is a client of the admin HTTP API.
type api struct {
	base  string // scheme://host[:port], without the API's path
	token string
	hc    *http.Client
}

func newAPI(base, token string) *api {
	return &api{base: strings.TrimSuffix(base, "/"), token: token, hc: &http.Client{}}
}

// apiPath is where the API lives under the daemon's admin address.
const apiPath = "/admin/api/v1"

// apiError is an error answer of the API.
type apiError struct {
	status  int
	code    string
	message string
	body    map[string]any // the whole answer: the import's "imported" is next to "error"
}

func (e *apiError) Error() string {
	return fmt.Sprintf("%s (HTTP %d %s)", e.message, e.status, e.code)
}

// projectPath is the API path of one of a project's endpoints.
func projectPath(project, endpoint string) string {
	return "/projects/" + url.PathEscape(project) + "/" + endpoint
}

// request sends a request and returns the response when its status is
// 2xx; otherwise it returns the API's error. The caller closes the body.
func (a *api) request(ctx context.Context, method, path string, query url.Values, body io.Reader) (*http.Response, error) {
	u := a.base + apiPath + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, fmt.Errorf("%w: --url %q: %v", errUsage, a.base, err)
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := a.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, a.base+apiPath+path, err)
	}
	if res.StatusCode/100 == 2 {
		return res, nil
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	e := &apiError{status: res.StatusCode}
	if json.Unmarshal(raw, &e.body) == nil {
		if inner, ok := e.body["error"].(map[string]any); ok {
			e.code, _ = inner["code"].(string)
			e.message, _ = inner["message"].(string)
		}
	}
	if e.message == "" {
		e.code = http.StatusText(res.StatusCode)
		e.message = fmt.Sprintf("%s %s answered %q: is --url the admin address of a kvsidecar?", method, u, bytes.TrimSpace(raw))
	}
	return nil, e
}

// call sends in (if not nil) as JSON and decodes the answer into out.
func (a *api) call(ctx context.Context, method, path string, query url.Values, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	return a.send(ctx, method, path, query, body, out)
}

// send streams body (a JSON document) and decodes the answer into out.
func (a *api) send(ctx context.Context, method, path string, query url.Values, body io.Reader, out any) error {
	res, err := a.request(ctx, method, path, query, body)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	dec := json.NewDecoder(res.Body)
	dec.UseNumber()
	if err := dec.Decode(out); err != nil {
		return fmt.Errorf("%s %s: read the answer: %w", method, path, err)
	}
	return nil
}

// isCode reports whether err is an API error with code.
func isCode(err error, code string) bool {
	var e *apiError
	return errors.As(err, &e) && e.code == code
}
