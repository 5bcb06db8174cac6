package web_test

import (
	"context"
	"os"
	"os/exec"
	"sync"
	"testing"

	"github.com/chromedp/chromedp"
)

// chromiumPath finds Debian's chromium. In CI (CI=true) a missing browser
// fails the test: the browser tests never skip there.
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("chromium is not installed; the browser tests need it in CI (.ci/run installs it with apt-get)")
	}
	t.Skip("chromium is not installed; skipping the browser tests (apt-get install chromium to run them)")
	return ""
}

// newBrowser starts a headless chromium with a fresh profile and returns a
// context for its first tab. The browser is stopped when the test ends, and
// the test fails if the page threw an uncaught exception or logged an error
// (a Content-Security-Policy violation, say). Refused API calls (401, 403)
// are logged by the browser's network layer; those are expected and ignored.
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("no-default-browser-check", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1440, 900),
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(allocCtx, chromedp.WithLogf(t.Logf))
	// Start the browser now, so a failure to launch is reported as such. (The
	// first call's context owns the browser, so it gets no timeout of its own.)
	if err := chromedp.Do(ctx); err != nil {
		cancelTab()
		cancelAlloc()
		t.Fatalf("start chromium: %v", err)
	}

	var (
		mu     sync.Mutex
		errors []string
	)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for m, err := range chromedp.Console(ctx) {
			if err != nil {
				return // the tab is gone: the test is over
			}
			if (m.Type == chromedp.ConsoleError || m.Type == chromedp.ConsoleException) && m.Source != "network" {
				mu.Lock()
				errors = append(errors, m.String())
				mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() {
		cancelTab()
		<-done
		cancelAlloc()
		for _, e := range errors {
			t.Errorf("the page logged an error: %s", e)
		}
	})
	return ctx
}
