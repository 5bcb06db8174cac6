package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/kvsidecar/kvsidecar/admin"
	"github.com/kvsidecar/kvsidecar/admin/export"
)

// cli is one invocation: its flags, streams and API client.
type cli struct {
	g   globals
	o   options
	io  stdio
	api *api
}

func (c *cli) json() bool { return c.g.output == "json" }

// printJSON writes v indented, as -o json does.
func (c *cli) printJSON(v any) error {
	enc := json.NewEncoder(c.io.out)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

func (c *cli) table() *tabwriter.Writer {
	return tabwriter.NewWriter(c.io.out, 0, 4, 2, ' ', 0)
}

// project is the project the command works on: --project, else the
// project of a project token.
func (c *cli) project(ctx context.Context) (string, error) {
	if c.g.project != "" {
		return c.g.project, nil
	}
	var who struct {
		Role    string `json:"role"`
		Project string `json:"project"`
	}
	if err := c.api.call(ctx, "GET", "/whoami", nil, nil, &who); err != nil {
		return "", err
	}
	if who.Project == "" {
		return "", fmt.Errorf("%w: an admin token reaches every project: name one with --project (or KVCTL_PROJECT)", errUsage)
	}
	return who.Project, nil
}

func cmdWhoami(ctx context.Context, c *cli, args []string) error {
	if err := wantArgs(args, 0, "no arguments"); err != nil {
		return err
	}
	var who map[string]any
	if err := c.api.call(ctx, "GET", "/whoami", nil, nil, &who); err != nil {
		return err
	}
	if c.json() {
		return c.printJSON(who)
	}
	fmt.Fprintln(c.io.out, who["role"])
	return nil
}

// projectJSON is a project as the API lists it.
type projectJSON struct {
	Name          string `json:"name"`
	UsageBytes    int64  `json:"usage_bytes"`
	Entries       int64  `json:"entries"`
	QuotaBytes    int64  `json:"quota_bytes"`
	QuotaOverride *int64 `json:"quota_override"`
}

func cmdProjects(ctx context.Context, c *cli, args []string) error {
	if err := wantArgs(args, 0, "no arguments"); err != nil {
		return err
	}
	var all []projectJSON
	cursor := ""
	for {
		var page struct {
			Projects   []projectJSON `json:"projects"`
			NextCursor string        `json:"next_cursor"`
		}
		q := url.Values{"limit": {"1000"}, "cursor": {cursor}}
		if err := c.api.call(ctx, "GET", "/projects", q, nil, &page); err != nil {
			return err
		}
		all = append(all, page.Projects...)
		if cursor = page.NextCursor; cursor == "" {
			break
		}
	}
	if c.json() {
		if all == nil {
			all = []projectJSON{}
		}
		return c.printJSON(map[string]any{"projects": all})
	}
	tw := c.table()
	fmt.Fprintln(tw, "PROJECT\tUSED\tQUOTA\tUSE\tENTRIES\tQUOTA FROM")
	for _, p := range all {
		from := "default"
		if p.QuotaOverride != nil {
			from = "override"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", p.Name, formatBytes(p.UsageBytes), formatBytes(p.QuotaBytes),
			percent(p.UsageBytes, p.QuotaBytes), p.Entries, from)
	}
	return tw.Flush()
}

// keyJSON is a key as the API lists it.
type keyJSON struct {
	Key       string  `json:"key"`
	Size      int64   `json:"size"`
	ExpiresAt *string `json:"expires_at"`
}

func cmdKeys(ctx context.Context, c *cli, args []string) error {
	if err := wantArgs(args, 0, "no arguments (filter with --prefix and --search)"); err != nil {
		return err
	}
	project, err := c.project(ctx)
	if err != nil {
		return err
	}
	// Keys are printed page by page, so a project of any size lists in
	// constant memory; -o json writes one array, element by element.
	tw := c.table()
	if c.json() {
		fmt.Fprint(c.io.out, "[")
	} else {
		fmt.Fprintln(tw, "KEY\tSIZE\tEXPIRES")
	}
	n := 0
	cursor := ""
	for {
		limit := 1000
		if c.o.limit > 0 {
			limit = min(limit, c.o.limit-n)
		}
		var page struct {
			Keys       []keyJSON `json:"keys"`
			NextCursor string    `json:"next_cursor"`
		}
		q := url.Values{"prefix": {c.o.prefix}, "search": {c.o.search}, "cursor": {cursor}, "limit": {strconv.Itoa(limit)}}
		if err := c.api.call(ctx, "GET", projectPath(project, "keys"), q, nil, &page); err != nil {
			return err
		}
		for _, k := range page.Keys {
			if c.json() {
				b, _ := json.Marshal(k)
				if n > 0 {
					fmt.Fprint(c.io.out, ",")
				}
				fmt.Fprintf(c.io.out, "\n  %s", b)
			} else {
				fmt.Fprintf(tw, "%s\t%s\t%s\n", printable(k.Key), formatBytes(k.Size), formatExpiry(k.ExpiresAt))
			}
			n++
		}
		if !c.json() {
			if err := tw.Flush(); err != nil {
				return err
			}
		}
		if cursor = page.NextCursor; cursor == "" || (c.o.limit > 0 && n >= c.o.limit) {
			break
		}
	}
	if c.json() {
		if n > 0 {
			fmt.Fprint(c.io.out, "\n")
		}
		fmt.Fprintln(c.io.out, "]")
	}
	return nil
}

func cmdGet(ctx context.Context, c *cli, args []string) error {
	if err := wantArgs(args, 1, "KEY"); err != nil {
		return err
	}
	project, err := c.project(ctx)
	if err != nil {
		return err
	}
	var entry struct {
		Key         string          `json:"key"`
		Value       json.RawMessage `json:"value"`
		ValueBase64 *string         `json:"value_base64"`
		Size        int64           `json:"size"`
		ExpiresAt   *string         `json:"expires_at"`
	}
	if err := c.api.call(ctx, "GET", projectPath(project, "entry"), url.Values{"key": {args[0]}}, nil, &entry); err != nil {
		return err
	}
	if c.json() {
		return c.printJSON(entry)
	}
	if entry.ValueBase64 != nil {
		v, err := base64.StdEncoding.DecodeString(*entry.ValueBase64)
		if err != nil {
			return fmt.Errorf("the answer's value_base64: %w", err)
		}
		_, err = c.io.out.Write(v)
		return err
	}
	var pretty bytes.Buffer
	if err := json.Indent(&pretty, entry.Value, "", "  "); err != nil {
		return fmt.Errorf("the answer's value: %w", err)
	}
	pretty.WriteByte('\n')
	_, err = c.io.out.Write(pretty.Bytes())
	return err
}

func cmdSet(ctx context.Context, c *cli, args []string) error {
	if err := wantArgs(args, 2, "KEY JSON"); err != nil {
		return err
	}
	key, value := args[0], []byte(args[1])
	if args[1] == "-" {
		var err error
		if value, err = io.ReadAll(c.io.in); err != nil {
			return fmt.Errorf("read the value from stdin: %w", err)
		}
		value = bytes.TrimSpace(value)
	}
	if !json.Valid(value) {
		return fmt.Errorf("%w: the value %s is not JSON; kvctl stores JSON values (a string needs quotes: '\"text\"')", errUsage, shorten(string(value)))
	}
	var ttl time.Duration
	if c.o.ttl != "" {
		var err error
		if ttl, err = time.ParseDuration(c.o.ttl); err != nil || ttl < 0 || (ttl > 0 && ttl < time.Millisecond) {
			return fmt.Errorf("%w: --ttl %q: want a duration of at least 1ms, such as 90s, 1h or 24h", errUsage, c.o.ttl)
		}
	}
	project, err := c.project(ctx)
	if err != nil {
		return err
	}
	var out struct {
		Key       string  `json:"key"`
		Size      int64   `json:"size"`
		ExpiresAt *string `json:"expires_at"`
	}
	in := map[string]any{"value": json.RawMessage(value), "ttl_ms": ttl.Milliseconds()}
	if err := c.api.call(ctx, "PUT", projectPath(project, "entry"), url.Values{"key": {key}}, in, &out); err != nil {
		return err
	}
	if c.json() {
		return c.printJSON(out)
	}
	fmt.Fprintf(c.io.out, "set %s in %s: %s, expires %s\n", printable(key), project, formatBytes(out.Size), formatExpiry(out.ExpiresAt))
	return nil
}

func cmdDelete(ctx context.Context, c *cli, args []string) error {
	if err := wantArgs(args, 1, "KEY"); err != nil {
		return err
	}
	project, err := c.project(ctx)
	if err != nil {
		return err
	}
	var out struct {
		Deleted bool `json:"deleted"`
	}
	if err := c.api.call(ctx, "DELETE", projectPath(project, "entry"), url.Values{"key": {args[0]}}, nil, &out); err != nil {
		return err
	}
	if c.json() {
		return c.printJSON(out)
	}
	if out.Deleted {
		fmt.Fprintf(c.io.out, "deleted %s from %s\n", printable(args[0]), project)
	} else {
		fmt.Fprintf(c.io.out, "%s was not in %s\n", printable(args[0]), project)
	}
	return nil
}

// usageJSON is a project's usage as the API reports it.
type usageJSON struct {
	Name          string `json:"name"`
	UsageBytes    int64  `json:"usage_bytes"`
	Entries       int64  `json:"entries"`
	QuotaBytes    int64  `json:"quota_bytes"`
	QuotaOverride *int64 `json:"quota_override"`
	Expiring1h    int64  `json:"expiring_1h_bytes"`
	Expiring24h   int64  `json:"expiring_24h_bytes"`
}

func cmdUsage(ctx context.Context, c *cli, args []string) error {
	if err := wantArgs(args, 0, "no arguments"); err != nil {
		return err
	}
	project, err := c.project(ctx)
	if err != nil {
		return err
	}
	limit := url.Values{"limit": {strconv.Itoa(max(1, min(c.o.limit, 1000)))}}
	var u usageJSON
	var prefixes struct {
		Prefixes []struct {
			Prefix  string `json:"prefix"`
			Bytes   int64  `json:"bytes"`
			Entries int64  `json:"entries"`
		} `json:"prefixes"`
	}
	var largest struct {
		Keys []struct {
			Key  string `json:"key"`
			Size int64  `json:"size"`
		} `json:"keys"`
	}
	if err := c.api.call(ctx, "GET", projectPath(project, "usage"), nil, nil, &u); err != nil {
		return err
	}
	if err := c.api.call(ctx, "GET", projectPath(project, "prefixes"), limit, nil, &prefixes); err != nil {
		return err
	}
	if err := c.api.call(ctx, "GET", projectPath(project, "largest"), limit, nil, &largest); err != nil {
		return err
	}
	if c.json() {
		return c.printJSON(map[string]any{"usage": u, "prefixes": prefixes.Prefixes, "largest": largest.Keys})
	}
	from := "the default"
	if u.QuotaOverride != nil {
		from = "the project's override"
	}
	tw := c.table()
	fmt.Fprintf(tw, "project\t%s\n", u.Name)
	fmt.Fprintf(tw, "used\t%s of %s (%s), %s\n", formatBytes(u.UsageBytes), formatBytes(u.QuotaBytes), percent(u.UsageBytes, u.QuotaBytes), entries(u.Entries))
	fmt.Fprintf(tw, "quota\t%s, %s\n", formatBytes(u.QuotaBytes), from)
	fmt.Fprintf(tw, "expiring\t%s within an hour, %s within a day\n", formatBytes(u.Expiring1h), formatBytes(u.Expiring24h))
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "PREFIX\tBYTES\tENTRIES")
	for _, p := range prefixes.Prefixes {
		name := p.Prefix
		if name == "" {
			name = "(no :)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\n", printable(name), formatBytes(p.Bytes), p.Entries)
	}
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "LARGEST KEY\tSIZE\t")
	for _, k := range largest.Keys {
		fmt.Fprintf(tw, "%s\t%s\t\n", printable(k.Key), formatBytes(k.Size))
	}
	return tw.Flush()
}

func cmdQuota(ctx context.Context, c *cli, args []string) error {
	if len(args) > 1 {
		return fmt.Errorf("%w: want at most one SIZE, got %d arguments", errUsage, len(args))
	}
	if c.o.dflt {
		var out struct {
			DefaultQuotaBytes int64 `json:"default_quota_bytes"`
		}
		var err error
		if len(args) == 0 {
			err = c.api.call(ctx, "GET", "/settings", nil, nil, &out)
		} else {
			n, perr := parseSize(args[0])
			if perr != nil {
				return fmt.Errorf("%w: %v", errUsage, perr)
			}
			err = c.api.call(ctx, "PUT", "/settings", nil, map[string]int64{"default_quota_bytes": n}, &out)
		}
		if err != nil {
			return err
		}
		if c.json() {
			return c.printJSON(out)
		}
		fmt.Fprintf(c.io.out, "default quota: %s (%d bytes)\n", formatBytes(out.DefaultQuotaBytes), out.DefaultQuotaBytes)
		return nil
	}
	project, err := c.project(ctx)
	if err != nil {
		return err
	}
	var out struct {
		Name          string `json:"name"`
		QuotaBytes    int64  `json:"quota_bytes"`
		QuotaOverride *int64 `json:"quota_override"`
	}
	if len(args) == 0 {
		err = c.api.call(ctx, "GET", projectPath(project, "usage"), nil, nil, &out)
	} else {
		var quota *int64 // nil removes the override
		if args[0] != "none" {
			n, perr := parseSize(args[0])
			if perr != nil {
				return fmt.Errorf("%w: %v (or none to remove the override)", errUsage, perr)
			}
			quota = &n
		}
		err = c.api.call(ctx, "PUT", projectPath(project, "quota"), nil, map[string]*int64{"quota_bytes": quota}, &out)
	}
	if err != nil {
		return err
	}
	if c.json() {
		return c.printJSON(out)
	}
	from := "the default"
	if out.QuotaOverride != nil {
		from = "the project's override"
	}
	fmt.Fprintf(c.io.out, "quota of %s: %s (%d bytes), %s\n", out.Name, formatBytes(out.QuotaBytes), out.QuotaBytes, from)
	return nil
}

func cmdToken(_ context.Context, c *cli, args []string) error {
	if len(args) != 2 || args[0] != "new" {
		return fmt.Errorf("%w: kvctl token new ROLE (ROLE: admin or project:NAME)", errUsage)
	}
	role, err := admin.ParseRole(args[1])
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	token, line, err := admin.NewToken(role)
	if err != nil {
		return err
	}
	if c.json() {
		return c.printJSON(map[string]string{"token": token, "role": string(role), "tokens_file_line": line})
	}
	fmt.Fprintf(c.io.out, "token (shown once; keep it in a file only you can read, for --token-file):\n%s\n\n", token)
	fmt.Fprintf(c.io.out, "line for the daemon's --admin-tokens file (then send the daemon SIGHUP):\n%s\n", line)
	return nil
}

// cmdExport streams the project's export to a file or stdout. It reads the
// document as it writes it, to count entries for the progress bar and to
// notice a document the daemon could not finish.
func cmdExport(ctx context.Context, c *cli, args []string) (err error) {
	if err := wantArgs(args, 0, "no arguments (the file is -o FILE)"); err != nil {
		return err
	}
	project, err := c.project(ctx)
	if err != nil {
		return err
	}
	res, err := c.api.request(ctx, "GET", projectPath(project, "export"), nil, nil)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	total, _ := strconv.ParseInt(res.Header.Get("X-Kvsidecar-Entries"), 10, 64)

	out := c.io.out
	if c.o.file != "" && c.o.file != "-" {
		f, err := os.Create(c.o.file)
		if err != nil {
			return err
		}
		defer func() {
			if cerr := f.Close(); err == nil && cerr != nil {
				err = cerr
			}
			if err != nil {
				os.Remove(c.o.file) // an unfinished export is not an export
			}
		}()
		out = f
	}
	bar := c.progress(total, "exporting "+project, false)
	rd, err := export.NewReader(io.TeeReader(res.Body, out), clientMaxEntry)
	if err != nil {
		return fmt.Errorf("read the export: %w", err)
	}
	for {
		_, err := rd.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("read the export after %d entries: %w", rd.Entries(), err)
		}
		bar.Add(1)
	}
	bar.Finish()
	if c.o.file != "" && c.o.file != "-" {
		fmt.Fprintf(c.io.err, "exported %s of %s to %s\n", entries(rd.Entries()), project, c.o.file)
	}
	return nil
}

// clientMaxEntry bounds one entry of an export kvctl reads: far above what
// a daemon writes (its values are at most tens of MiB), so it only stops a
// runaway document from growing kvctl's memory without end.
const clientMaxEntry = 1 << 30

// importResult is the import's answer.
type importResult struct {
	Imported       int64 `json:"imported"`
	SkippedExpired int64 `json:"skipped_expired"`
	DryRun         bool  `json:"dry_run"`
	Replaced       bool  `json:"replaced"`
}

func cmdImport(ctx context.Context, c *cli, args []string) error {
	if err := wantArgs(args, 1, "FILE (- for stdin)"); err != nil {
		return err
	}
	project, err := c.project(ctx)
	if err != nil {
		return err
	}
	send := func(dryRun bool, what string) (importResult, error) {
		var body io.Reader
		var size int64
		if args[0] == "-" {
			body = c.io.in
		} else {
			f, err := os.Open(args[0])
			if err != nil {
				return importResult{}, err
			}
			defer f.Close()
			if info, err := f.Stat(); err == nil {
				size = info.Size()
			}
			body = f
		}
		bar := c.progress(size, what, true)
		q := url.Values{"dry_run": {strconv.FormatBool(dryRun)}, "replace": {strconv.FormatBool(c.o.replace)}}
		var res importResult
		err := c.api.send(ctx, "POST", projectPath(project, "import"), q, io.TeeReader(body, bar), &res)
		if err != nil {
			bar.Exit()
			return importResult{}, err
		}
		bar.Finish()
		return res, nil
	}
	// A file is checked whole (a dry run) before anything is written, so a
	// broken file never half-imports, and --replace never clears for one.
	if !c.o.dryRun && args[0] != "-" {
		if _, err := send(true, "checking "+args[0]); err != nil {
			return fmt.Errorf("%s was checked before writing and nothing was written: %w", args[0], err)
		}
	}
	res, err := send(c.o.dryRun, "importing into "+project)
	if err != nil {
		var e *apiError
		if errors.As(err, &e) && e.body["imported"] != nil {
			return fmt.Errorf("%w; %v entries were imported before it stopped", err, e.body["imported"])
		}
		return err
	}
	if c.json() {
		return c.printJSON(res)
	}
	switch {
	case res.DryRun:
		fmt.Fprintf(c.io.out, "dry run: %s is valid; %s would be imported into %s, %d already expired would be skipped\n",
			args[0], entries(res.Imported), project, res.SkippedExpired)
	default:
		replaced := ""
		if res.Replaced {
			replaced = " (cleared first)"
		}
		fmt.Fprintf(c.io.out, "imported %s into %s%s; skipped %d already expired\n", entries(res.Imported), project, replaced, res.SkippedExpired)
	}
	return nil
}

// formatBytes writes n in binary units: 512 B, 1.5 KiB, 3.2 GiB.
func formatBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func percent(used, quota int64) string {
	if quota <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f%%", 100*float64(used)/float64(quota))
}

func formatExpiry(at *string) string {
	if at == nil {
		return "never"
	}
	t, err := time.Parse(time.RFC3339Nano, *at)
	if err != nil {
		return *at
	}
	return t.Local().Format("2006-01-02 15:04:05") + " (in " + time.Until(t).Truncate(time.Second).String() + ")"
}

// printable quotes a key for the table when it holds what a terminal would
// not show as it is.
func printable(s string) string {
	if strconv.CanBackquote(s) && !strings.ContainsAny(s, "\t ") {
		return s
	}
	return strconv.Quote(s)
}

func shorten(s string) string {
	if len(s) > 40 {
		s = s[:40] + "…"
	}
	return strconv.Quote(s)
}

// parseSize reads a quota: bytes, or a number with a unit KB, MB, GB, TB
// (powers of 1000) or KiB, MiB, GiB, TiB (powers of 1024), as the daemon's
// --default-quota does.
func parseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && (t[i] >= '0' && t[i] <= '9' || t[i] == '.') {
		i++
	}
	mult := map[string]float64{
		"": 1, "b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12,
		"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40,
	}[strings.ToLower(strings.TrimSpace(t[i:]))]
	f, err := strconv.ParseFloat(t[:i], 64)
	if err != nil || mult == 0 || f*mult < 1 || f*mult > 1<<62 {
		return 0, fmt.Errorf("size %q: want bytes, or a number with a unit such as 512MiB or 1GB", s)
	}
	return int64(f * mult), nil
}

// entries says "1 entry" or "N entries".
func entries[N int | int64](n N) string {
	if n == 1 {
		return "1 entry"
	}
	return fmt.Sprintf("%d entries", n)
}
