// Command kvctl administers kvsidecar from a terminal, over the admin HTTP
// API (docs/ADMIN.md) that a daemon serves on --admin-addr: projects and
// their usage, key search, reading and writing entries, quotas, and
// streamed export and import. `kvctl help` lists the commands.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.LookupEnv, stdio{in: os.Stdin, out: os.Stdout, err: os.Stderr, errTTY: stderrIsTerminal()}))
}

// stdio is the command's standard streams; errTTY says whether stderr is a
// terminal (progress bars are drawn only there).
type stdio struct {
	in     io.Reader
	out    io.Writer
	err    io.Writer
	errTTY bool
}

// DefaultURL is the admin API's address unless --url or KVCTL_URL says
// otherwise: the address the README suggests for --admin-addr.
const DefaultURL = "http://127.0.0.1:9480"

// globals are the flags every command takes.
type globals struct {
	url       string
	tokenFile string
	project   string
	output    string // json or table
}

// command is one kvctl command.
type command struct {
	name, args, help string
	// flags adds the command's own flags.
	flags func(fs *flag.FlagSet, o *options)
	run   func(ctx context.Context, c *cli, args []string) error
	// offline commands need no server (token new).
	offline bool
}

// options holds the values of every command's own flags.
type options struct {
	prefix, search string
	limit          int
	ttl            string
	dflt           bool
	file           string
	replace        bool
	dryRun         bool
}

func commands() []command {
	return []command{
		{name: "whoami", help: "show the token's role", run: cmdWhoami},
		{name: "projects", help: "list projects with their usage, entries and quota", run: cmdProjects},
		{name: "keys", args: "[--prefix P] [--search S]", help: "list a project's keys (size, expiry), by prefix and substring",
			flags: func(fs *flag.FlagSet, o *options) {
				fs.StringVar(&o.prefix, "prefix", "", "only keys starting with `P`")
				fs.StringVar(&o.search, "search", "", "only keys containing `S` (case-sensitive)")
				fs.IntVar(&o.limit, "limit", 0, "stop after `N` keys (0: all)")
			}, run: cmdKeys},
		{name: "get", args: "KEY", help: "print a value: JSON pretty-printed, other bytes as they are", run: cmdGet},
		{name: "set", args: "KEY JSON [--ttl 1h]", help: "store a JSON value (\"-\" reads it from stdin)",
			flags: func(fs *flag.FlagSet, o *options) {
				fs.StringVar(&o.ttl, "ttl", "", "expire after `DURATION` (90s, 1h, 24h); default never")
			}, run: cmdSet},
		{name: "delete", args: "KEY", help: "delete a key", run: cmdDelete},
		{name: "usage", help: "a project's usage: bytes, quota, what expires soon, top prefixes, largest keys",
			flags: func(fs *flag.FlagSet, o *options) {
				fs.IntVar(&o.limit, "limit", 10, "show `N` prefixes and keys")
			}, run: cmdUsage},
		{name: "quota", args: "[SIZE|none] [--default]", help: "show or set the project's quota (none removes the override), or with --default the default quota",
			flags: func(fs *flag.FlagSet, o *options) {
				fs.BoolVar(&o.dflt, "default", false, "the default quota of projects without an override")
			}, run: cmdQuota},
		{name: "export", args: "[-o FILE]", help: "export a project as a JSON document (to stdout without -o)",
			flags: func(fs *flag.FlagSet, o *options) {
				fs.StringVar(&o.file, "o", "", "write the export to `FILE`")
			}, run: cmdExport},
		{name: "import", args: "FILE [--replace] [--dry-run]", help: "import an export document or a plain JSON object; a FILE is checked whole before anything is written (\"-\" reads stdin, checked as it is written)",
			flags: func(fs *flag.FlagSet, o *options) {
				fs.BoolVar(&o.replace, "replace", false, "clear the project first")
				fs.BoolVar(&o.dryRun, "dry-run", false, "only check the file; write nothing")
			}, run: cmdImport},
		{name: "token", args: "new ROLE", help: "print a new token (once) and its line for the tokens file; ROLE is admin or project:NAME",
			run: cmdToken, offline: true},
	}
}

// errUsage is a mistake on the command line: exit status 2.
var errUsage = errors.New("usage")

func usage(w io.Writer) {
	fmt.Fprint(w, `kvctl administers kvsidecar over its admin HTTP API.

Usage: kvctl [global flags] COMMAND [flags] [args]

Commands:
`)
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-9s %-28s %s\n", c.name, c.args, c.help)
	}
	fmt.Fprint(w, `
Global flags (before or after the command):
  --url URL          the admin API (env KVCTL_URL; default `+DefaultURL+`)
  --token-file FILE  file holding the token (env KVCTL_TOKEN_FILE); or put the token itself in KVCTL_TOKEN
  --project NAME     the project (env KVCTL_PROJECT; default: a project token's own)
  -o json|table      output format (default table); for export, -o names the file

A KEY or JSON that starts with "-" (other than a negative number) follows "--":
  kvctl get -- -odd-key
`)
}

func run(ctx context.Context, args []string, lookupEnv func(string) (string, bool), io stdio) int {
	err := runErr(ctx, args, lookupEnv, io)
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprintf(io.err, "kvctl: %v\n", err)
		fmt.Fprintln(io.err, "Run kvctl help for the commands.")
		return 2
	}
	fmt.Fprintf(io.err, "kvctl: %v\n", err)
	return 1
}

func env(lookupEnv func(string) (string, bool), name, def string) string {
	if v, ok := lookupEnv(name); ok && v != "" {
		return v
	}
	return def
}

func runErr(ctx context.Context, args []string, lookupEnv func(string) (string, bool), io stdio) error {
	g := globals{
		url:       env(lookupEnv, "KVCTL_URL", DefaultURL),
		tokenFile: env(lookupEnv, "KVCTL_TOKEN_FILE", ""),
		project:   env(lookupEnv, "KVCTL_PROJECT", ""),
		output:    "table",
	}
	top := flag.NewFlagSet("kvctl", flag.ContinueOnError)
	top.SetOutput(io.err)
	top.Usage = func() { usage(io.err) }
	addGlobals(top, &g, true)
	if err := top.Parse(args); err != nil {
		return err
	}
	if top.NArg() == 0 || top.Arg(0) == "help" {
		usage(io.out)
		if top.NArg() == 0 {
			return fmt.Errorf("%w: no command", errUsage)
		}
		return nil
	}
	name := top.Arg(0)
	var cmd *command
	for _, c := range commands() {
		if c.name == name {
			cmd = &c
			break
		}
	}
	if cmd == nil {
		return fmt.Errorf("%w: unknown command %q", errUsage, name)
	}

	var o options
	fs := flag.NewFlagSet("kvctl "+name, flag.ContinueOnError)
	fs.SetOutput(io.err)
	fs.Usage = func() {
		fmt.Fprintf(io.err, "Usage: kvctl %s %s\n%s\n", name, cmd.args, cmd.help)
		fs.PrintDefaults()
	}
	addGlobals(fs, &g, name != "export")
	if cmd.flags != nil {
		cmd.flags(fs, &o)
	}
	rest, err := parseInterspersed(fs, top.Args()[1:])
	if err != nil {
		return err
	}
	if g.output != "json" && g.output != "table" {
		return fmt.Errorf("%w: -o %q: want json or table", errUsage, g.output)
	}
	c := &cli{g: g, o: o, io: io}
	if !cmd.offline {
		token, err := loadToken(lookupEnv, g.tokenFile)
		if err != nil {
			return err
		}
		c.api = newAPI(g.url, token)
	}
	return cmd.run(ctx, c, rest)
}

func addGlobals(fs *flag.FlagSet, g *globals, withOutput bool) {
	fs.StringVar(&g.url, "url", g.url, "the admin API's `URL` (env KVCTL_URL)")
	fs.StringVar(&g.tokenFile, "token-file", g.tokenFile, "`FILE` holding the token (env KVCTL_TOKEN_FILE; or the token in KVCTL_TOKEN)")
	fs.StringVar(&g.project, "project", g.project, "the project `NAME` (env KVCTL_PROJECT)")
	if withOutput {
		fs.StringVar(&g.output, "o", g.output, "output `FORMAT`: json or table")
	}
}

// parseInterspersed parses flags wherever they are among the arguments
// (kvctl set KEY JSON --ttl 1h) and returns the other arguments. A negative
// number (kvctl set n -5) is an argument, not a flag; "--" ends the flags,
// for a key that starts with "-".
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var rest []string
	for len(args) > 0 {
		// The flags and arguments up to the next negative number.
		end := 0
		for end < len(args) && !isNegativeNumber(args[end]) && args[end] != "--" {
			end++
		}
		segment := args[:end]
		for len(segment) > 0 {
			if err := fs.Parse(segment); err != nil {
				return nil, err
			}
			segment = fs.Args()
			if len(segment) > 0 {
				rest = append(rest, segment[0])
				segment = segment[1:]
			}
		}
		if end == len(args) {
			break
		}
		if args[end] == "--" {
			return append(rest, args[end+1:]...), nil
		}
		rest = append(rest, args[end])
		args = args[end+1:]
	}
	return rest, nil
}

// isNegativeNumber reports whether s reads as a negative number: an
// argument (a JSON value), never a flag.
func isNegativeNumber(s string) bool {
	return len(s) > 1 && s[0] == '-' && (s[1] >= '0' && s[1] <= '9' || s[1] == '.')
}

// loadToken reads the token: --token-file (or KVCTL_TOKEN_FILE) wins over
// KVCTL_TOKEN.
func loadToken(lookupEnv func(string) (string, bool), file string) (string, error) {
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("read token file: %w", err)
		}
		token := strings.TrimSpace(string(b))
		if token == "" {
			return "", fmt.Errorf("token file %s is empty", file)
		}
		return token, nil
	}
	if t, ok := lookupEnv("KVCTL_TOKEN"); ok && strings.TrimSpace(t) != "" {
		return strings.TrimSpace(t), nil
	}
	return "", fmt.Errorf("%w: no token: give --token-file FILE, or the token in KVCTL_TOKEN (kvctl token new ROLE makes one)", errUsage)
}

// wantArgs checks the number of positional arguments.
func wantArgs(args []string, n int, what string) error {
	if len(args) != n {
		return fmt.Errorf("%w: want %s, got %d argument(s)", errUsage, what, len(args))
	}
	return nil
}
