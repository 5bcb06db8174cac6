package web_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image/png"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/kvsidecar/kvsidecar/store"
)

// The page's tests, in a real headless chromium, against the real admin
// handler over a real Pebble store (see startAdmin). They assert what an
// operator sees on the page and what the store holds after they act.

const (
	shop  = "shop"  // the project the tests browse
	other = "other" // a second project, for the project-role checks and the import round trip
)

// seedShop writes the entries the tests look for.
func seedShop(t *testing.T, s store.Store) {
	t.Helper()
	ctx := context.Background()
	set := func(project, key string, value []byte, ttl time.Duration) {
		if err := s.Set(ctx, project, key, value, ttl); err != nil {
			t.Fatalf("seed %s/%s: %v", project, key, err)
		}
	}
	for i := 1; i <= 120; i++ {
		set(shop, fmt.Sprintf("user:%04d", i), fmt.Appendf(nil, `{"name":"User %d","visits":%d}`, i, i*3), 0)
	}
	for i := 1; i <= 7; i++ {
		set(shop, fmt.Sprintf("tmp:%d", i), []byte(`true`), 0)
	}
	set(shop, "cart:1", []byte(`{"items":[{"sku":"A-1","qty":2}]}`), 2*time.Hour)
	set(shop, "big", []byte(`12345678901234567890`), 0) // beyond 2^53: must not be rounded
	set(shop, "blob", []byte{0x00, 0x01, 0x02, 0xff, 'k', 'v'}, 0)
	set(shop, "huge", bytes.Repeat([]byte("x"), 40_000), 0) // not JSON, and the largest key
	set(shop, hostileKey, []byte(`"<script>window.pwned = 1</script><img src=x onerror=\"window.pwned = 1\">"`), 0)
	set(other, "hello", []byte(`"world"`), 0)
}

// hostileKey is a key an attacker with write access could store, hoping the
// page renders it as HTML.
const hostileKey = `<img src=x onerror="window.pwned = 1">`

// run runs page actions with a deadline, failing the test with what was being done.
func run(t *testing.T, ctx context.Context, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// eval evaluates a JavaScript expression in the page and decodes its value.
func eval[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// waitFor polls a JavaScript condition until it is true, and fails the test
// with the condition and what the page shows when it stays false. It keeps
// polling through page loads (a sign-out reloads the page).
func waitFor(t *testing.T, ctx context.Context, cond string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		ectx, cancel := context.WithTimeout(ctx, 2*time.Second)
		ok, err := chromedp.Run(ectx, chromedp.Evaluate[bool](cond))
		cancel()
		if err == nil && ok {
			return
		}
		last = err
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("waiting for %s: still false (last error %v)\nbanner: %q", cond, last, banner(t, ctx))
}

// text returns the textContent of the element with id.
func text(t *testing.T, ctx context.Context, id string) string {
	t.Helper()
	return eval[string](t, ctx, fmt.Sprintf(`document.getElementById(%q).textContent`, id))
}

// banner returns what the page's message bar says, or "" when it is hidden.
func banner(t *testing.T, ctx context.Context) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	s, _ := chromedp.Run(ctx, chromedp.Evaluate[string](
		`document.getElementById('banner').hidden ? '' : document.getElementById('banner-text').textContent`))
	return s
}

// js quotes s as a JavaScript string literal (also a CSS one: no \u escapes
// for < > &, which CSS would not read).
func js(s string) string {
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.Encode(s)
	return strings.TrimSuffix(b.String(), "\n")
}

// textContains is a condition: the element with id shows s.
func textContains(id, s string) string {
	return fmt.Sprintf(`(document.getElementById(%q)?.textContent ?? '').includes(%s)`, id, js(s))
}

// visible is a condition: the element matching sel is present and shown.
func visible(sel string) string {
	return fmt.Sprintf(`(() => { const e = document.querySelector(%s); return !!e && e.offsetParent !== null; })()`, js(sel))
}

// shownKeys returns the keys of the key browser's rows, in page order.
func shownKeys(t *testing.T, ctx context.Context) []string {
	t.Helper()
	return eval[[]string](t, ctx, `[...document.querySelectorAll('#keys tr')].map(tr => tr.dataset.key)`)
}

// setField sets an input's value as a user typing it would, firing input events.
func setField(t *testing.T, ctx context.Context, id, value string) {
	t.Helper()
	eval[bool](t, ctx, fmt.Sprintf(`(() => { const e = document.getElementById(%q); e.focus(); e.value = %s;
		e.dispatchEvent(new Event('input', {bubbles: true})); return true; })()`, id, js(value)))
}

func click(t *testing.T, ctx context.Context, sel string) {
	t.Helper()
	run(t, ctx, "click "+sel, chromedp.Click(chromedp.CSS(sel), chromedp.NodeVisible))
}

// signIn opens the page and signs in with token, waiting for the project list.
func signIn(t *testing.T, ctx context.Context, pageURL, token string) {
	t.Helper()
	run(t, ctx, "open the page", chromedp.Navigate(pageURL), chromedp.WaitVisible(chromedp.ID("token")))
	run(t, ctx, "type the token", chromedp.SendKeys(chromedp.ID("token"), token))
	click(t, ctx, "#signin-button")
	waitFor(t, ctx, visible("#projects li[data-project]"))
}

// storeKeys lists the live keys of project with the prefix, as the store has them.
func storeKeys(t *testing.T, s store.Store, project, prefix string) []string {
	t.Helper()
	var keys []string
	after := ""
	for {
		page, err := s.List(context.Background(), project, store.ListOptions{Prefix: prefix, After: after, Limit: store.MaxListLimit})
		if err != nil {
			t.Fatalf("list %s: %v", project, err)
		}
		for _, e := range page.Entries {
			keys = append(keys, e.Key)
		}
		if !page.More {
			return keys
		}
		after = page.Entries[len(page.Entries)-1].Key
	}
}

func storeGet(t *testing.T, s store.Store, project, key string) ([]byte, bool) {
	t.Helper()
	v, ok, err := s.Get(context.Background(), project, key)
	if err != nil {
		t.Fatalf("get %s/%s: %v", project, key, err)
	}
	return v, ok
}

func storeUsage(t *testing.T, s store.Store, project string) store.Usage {
	t.Helper()
	u, err := s.Usage(context.Background(), project)
	if err != nil {
		t.Fatalf("usage %s: %v", project, err)
	}
	return u
}

func TestPageAdminRole(t *testing.T) {
	srv := startAdmin(t)
	seedShop(t, srv.Store)
	ctx := newBrowser(t)
	downloads := t.TempDir()
	if _, err := chromedp.CallBrowser(ctx, browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{
		Behavior: browser.SetDownloadBehaviorBehaviorAllow, DownloadPath: downloads,
	}); err != nil {
		t.Fatalf("allow downloads: %v", err)
	}

	signIn(t, ctx, srv.PageURL, srv.AdminToken)

	t.Run("projects with usage", func(t *testing.T) {
		if who := text(t, ctx, "whoami"); who != "admin" {
			t.Errorf("the top bar says %q, want admin", who)
		}
		names := eval[[]string](t, ctx, `[...document.querySelectorAll('#projects li[data-project]')].map(li => li.dataset.project)`)
		if !slices.Equal(names, []string{other, shop}) {
			t.Errorf("projects listed: %q, want %q", names, []string{other, shop})
		}
		u := storeUsage(t, srv.Store, shop)
		meta := eval[string](t, ctx, `document.querySelector('#projects li[data-project="shop"] .pmeta').textContent`)
		want := fmt.Sprintf("%d entries", u.Entries)
		if !strings.Contains(meta, want) || !strings.Contains(meta, "/ 1 GiB") {
			t.Errorf("shop's line says %q, want it to show %q and the 1 GiB quota", meta, want)
		}
		width := eval[string](t, ctx, `document.querySelector('#projects li[data-project="shop"] .bar span').style.width`)
		if width == "" || width == "0.0%" {
			t.Errorf("shop's usage bar is %q wide; it holds %d bytes", width, u.Bytes)
		}
	})

	t.Run("browse pages in key order", func(t *testing.T) {
		click(t, ctx, `#projects li[data-project="shop"] a`)
		waitFor(t, ctx, `document.querySelectorAll('#keys tr').length === 100`)
		all := storeKeys(t, srv.Store, shop, "")
		if got := shownKeys(t, ctx); !slices.Equal(got, all[:100]) {
			t.Fatalf("first page shows %d keys %q…, want the store's first 100 %q…", len(got), got[:3], all[:3])
		}
		click(t, ctx, "#page-next")
		waitFor(t, ctx, textContains("page-info", "101–"))
		if got := shownKeys(t, ctx); !slices.Equal(got, all[100:]) {
			t.Errorf("second page shows %q, want %q", got, all[100:])
		}
		if !eval[bool](t, ctx, `document.getElementById('page-next').disabled`) {
			t.Error("Next is enabled on the last page")
		}
		click(t, ctx, "#page-prev")
		waitFor(t, ctx, textContains("page-info", "1–100"))
	})

	t.Run("filter by prefix and substring", func(t *testing.T) {
		eval[bool](t, ctx, `document.activeElement.blur(), true`)
		run(t, ctx, "press /", chromedp.KeyEvent("/"))
		if id := eval[string](t, ctx, `document.activeElement.id`); id != "filter-prefix" {
			t.Errorf("/ focused %q, want the prefix filter", id)
		}
		setField(t, ctx, "filter-prefix", "user:00")
		setField(t, ctx, "filter-search", "5")
		click(t, ctx, "#filter-apply")
		var want []string
		for _, k := range storeKeys(t, srv.Store, shop, "user:00") {
			if strings.Contains(k, "5") {
				want = append(want, k)
			}
		}
		waitFor(t, ctx, fmt.Sprintf(`document.querySelectorAll('#keys tr').length === %d`, len(want)))
		if got := shownKeys(t, ctx); !slices.Equal(got, want) {
			t.Errorf("filtered keys %q, want %q", got, want)
		}
		if h := eval[string](t, ctx, `location.hash`); !strings.Contains(h, "prefix=user%3A00") {
			t.Errorf("the filter is not in the address (%q), so it cannot be bookmarked", h)
		}
		setField(t, ctx, "filter-prefix", "")
		setField(t, ctx, "filter-search", "")
		click(t, ctx, "#filter-apply")
		waitFor(t, ctx, `document.querySelectorAll('#keys tr').length === 100`)
	})

	t.Run("open values", func(t *testing.T) {
		click(t, ctx, `#keys tr[data-key="user:0042"]`)
		waitFor(t, ctx, textContains("entry-key", "user:0042"))
		want := "{\n  \"name\": \"User 42\",\n  \"visits\": 126\n}"
		if got := text(t, ctx, "entry-value"); got != want {
			t.Errorf("user:0042 shows\n%s\nwant it pretty-printed:\n%s", got, want)
		}
		if got := text(t, ctx, "entry-type"); got != "JSON object" {
			t.Errorf("user:0042 has type %q, want JSON object", got)
		}

		click(t, ctx, `#keys tr[data-key="big"]`)
		waitFor(t, ctx, textContains("entry-key", "big"))
		if got := text(t, ctx, "entry-value"); got != "12345678901234567890" {
			t.Errorf("big shows %q; the number must not be rounded", got)
		}

		click(t, ctx, `#keys tr[data-key="blob"]`)
		waitFor(t, ctx, textContains("entry-key", "blob"))
		if got := text(t, ctx, "entry-value"); !strings.Contains(got, "00 01 02 ff 6b 76") || !strings.Contains(got, "|....kv|") {
			t.Errorf("blob (not UTF-8) shows %q, want a hex dump", got)
		}
		if got := text(t, ctx, "entry-type"); !strings.Contains(got, "binary") {
			t.Errorf("blob has type %q, want binary", got)
		}

		click(t, ctx, "#keys tr[data-key="+js(hostileKey)+"]")
		waitFor(t, ctx, textContains("entry-key", hostileKey))
		if got := text(t, ctx, "entry-value"); !strings.Contains(got, "<script>window.pwned = 1</script>") {
			t.Errorf("the hostile value shows as %q, want its text", got)
		}
		if eval[bool](t, ctx, `window.pwned === 1 || !!document.querySelector('#keys img, #entry-pane img, #entry-pane script')`) {
			t.Error("a key or value was rendered as HTML")
		}

		click(t, ctx, `#keys tr[data-key="cart:1"]`)
		waitFor(t, ctx, textContains("entry-key", "cart:1"))
		if got := text(t, ctx, "entry-expires"); !strings.HasPrefix(got, "in 1h 59m") {
			t.Errorf("cart:1 (TTL 2h) expires %q, want in 1h 59m", got)
		}
		ttl := eval[string](t, ctx, `document.querySelector('#keys tr[data-key="cart:1"] td.ttl').textContent`)
		if ttl != "1h 59m" {
			t.Errorf("cart:1's TTL column says %q, want 1h 59m", ttl)
		}
	})

	t.Run("arrow keys walk the list", func(t *testing.T) {
		click(t, ctx, `#keys tr[data-key="user:0001"] button`)
		waitFor(t, ctx, textContains("entry-key", "user:0001"))
		run(t, ctx, "press down twice", chromedp.KeyEvent(kb.ArrowDown), chromedp.KeyEvent(kb.ArrowDown))
		waitFor(t, ctx, textContains("entry-key", "user:0003"))
		run(t, ctx, "press up", chromedp.KeyEvent(kb.ArrowUp))
		waitFor(t, ctx, textContains("entry-key", "user:0002")+` && document.activeElement.closest('tr')?.dataset.key === 'user:0002'`)
	})

	t.Run("edit a value", func(t *testing.T) {
		click(t, ctx, `#keys tr[data-key="user:0042"]`)
		waitFor(t, ctx, textContains("entry-key", "user:0042"))
		before, _ := storeGet(t, srv.Store, shop, "user:0042")
		click(t, ctx, "#entry-edit")
		waitFor(t, ctx, visible("#edit-value"))

		setField(t, ctx, "edit-value", `{"name": "Renamed",`)
		click(t, ctx, "#edit-save")
		waitFor(t, ctx, visible("#edit-error"))
		if msg := text(t, ctx, "edit-error"); !strings.Contains(msg, "not valid JSON") {
			t.Errorf("saving broken JSON says %q, want it to say the JSON is not valid", msg)
		}
		if now, _ := storeGet(t, srv.Store, shop, "user:0042"); !bytes.Equal(now, before) {
			t.Fatalf("broken JSON was saved: the store holds %s", now)
		}

		setField(t, ctx, "edit-value", `{"name": "Renamed", "n": 12345678901234567890}`)
		setField(t, ctx, "edit-ttl", "1h")
		click(t, ctx, "#edit-save")
		waitFor(t, ctx, visible("#entry-view")+` && `+textContains("entry-value", "Renamed"))
		v, ok := storeGet(t, srv.Store, shop, "user:0042")
		var doc map[string]json.RawMessage
		if !ok || json.Unmarshal(v, &doc) != nil || string(doc["name"]) != `"Renamed"` || string(doc["n"]) != "12345678901234567890" {
			t.Errorf("after saving, the store holds %s (found %v); want the edited object with n exact", short(v), ok)
		}
		exp := expiry(t, srv.Store, shop, "user:0042")
		if left := time.Until(exp); left < 58*time.Minute || left > time.Hour {
			t.Errorf("the TTL set in the editor left %v (expiry %v), want about 1h", left, exp)
		}
		if got := text(t, ctx, "entry-expires"); !strings.HasPrefix(got, "in 59m") {
			t.Errorf("after saving with TTL 1h the entry says it expires %q", got)
		}
	})

	t.Run("new key", func(t *testing.T) {
		click(t, ctx, "#new-key")
		waitFor(t, ctx, visible("#edit-key"))
		setField(t, ctx, "edit-key", "note:hand-written")
		setField(t, ctx, "edit-format", "text")
		setField(t, ctx, "edit-value", "plain text, not JSON")
		click(t, ctx, "#edit-save")
		waitFor(t, ctx, textContains("entry-key", "note:hand-written")+` && `+visible("#entry-view"))
		if v, _ := storeGet(t, srv.Store, shop, "note:hand-written"); string(v) != "plain text, not JSON" {
			t.Errorf("the new key holds %q", v)
		}
		if got := text(t, ctx, "entry-value"); got != "plain text, not JSON" {
			t.Errorf("the new key shows %q", got)
		}
	})

	t.Run("edit bytes as hex", func(t *testing.T) {
		click(t, ctx, `#keys tr[data-key="blob"]`)
		waitFor(t, ctx, textContains("entry-key", "blob"))
		click(t, ctx, "#entry-edit")
		waitFor(t, ctx, visible("#edit-value"))
		if got := eval[string](t, ctx, `document.getElementById('edit-format').value + ' ' + document.getElementById('edit-value').value`); got != "hex 00 01 02 ff 6b 76" {
			t.Errorf("the editor opens blob as %q", got)
		}
		// Bytes that are not UTF-8 stay hex.
		eval[bool](t, ctx, `(() => { const f = document.getElementById('edit-format'); f.value = 'text';
			return f.dispatchEvent(new Event('change')); })()`)
		waitFor(t, ctx, textContains("edit-error", "not UTF-8"))
		setField(t, ctx, "edit-value", "de ad be ef 0a")
		click(t, ctx, "#edit-save")
		waitFor(t, ctx, visible("#entry-view")+` && `+textContains("entry-value", "de ad be ef 0a"))
		if v, _ := storeGet(t, srv.Store, shop, "blob"); !bytes.Equal(v, []byte{0xde, 0xad, 0xbe, 0xef, 0x0a}) {
			t.Errorf("blob holds % x after the hex edit", v)
		}
	})

	t.Run("delete a key", func(t *testing.T) {
		click(t, ctx, `#keys tr[data-key="user:0007"]`)
		waitFor(t, ctx, textContains("entry-key", "user:0007"))
		click(t, ctx, "#entry-delete")
		waitFor(t, ctx, `document.getElementById('confirm-dialog').open`)
		if got := text(t, ctx, "confirm-text"); !strings.Contains(got, "user:0007") {
			t.Errorf("the confirmation says %q; it should name the key", got)
		}
		click(t, ctx, "#confirm-cancel")
		waitFor(t, ctx, `!document.getElementById('confirm-dialog').open`)
		if _, ok := storeGet(t, srv.Store, shop, "user:0007"); !ok {
			t.Fatal("Cancel deleted the key")
		}
		click(t, ctx, "#entry-delete")
		waitFor(t, ctx, `document.getElementById('confirm-dialog').open`)
		click(t, ctx, "#confirm-ok")
		waitFor(t, ctx, `!document.querySelector('#keys tr[data-key="user:0007"]')`)
		if _, ok := storeGet(t, srv.Store, shop, "user:0007"); ok {
			t.Error("the key is still in the store after Delete")
		}
	})

	t.Run("bulk delete shows the count first", func(t *testing.T) {
		setField(t, ctx, "filter-prefix", "tmp:")
		click(t, ctx, "#filter-apply")
		waitFor(t, ctx, `document.querySelectorAll('#keys tr').length === 7`)
		click(t, ctx, "#bulk-delete")
		waitFor(t, ctx, `document.getElementById('confirm-dialog').open`)
		if got := text(t, ctx, "confirm-title"); got != "Delete 7 keys?" {
			t.Errorf("the bulk delete asks %q, want Delete 7 keys?", got)
		}
		if n := len(storeKeys(t, srv.Store, shop, "tmp:")); n != 7 {
			t.Fatalf("the count deleted %d keys before the operator agreed", 7-n)
		}
		click(t, ctx, "#confirm-ok")
		waitFor(t, ctx, `document.querySelectorAll('#keys tr').length === 0`)
		if got := banner(t, ctx); got != "Deleted 7 keys." {
			t.Errorf("after the bulk delete the page says %q", got)
		}
		if left := storeKeys(t, srv.Store, shop, "tmp:"); len(left) != 0 {
			t.Errorf("tmp: keys left in the store: %q", left)
		}
		if n := len(storeKeys(t, srv.Store, shop, "user:")); n != 119 {
			t.Errorf("%d user: keys left, want 119: the bulk delete went past its filter", n)
		}
		setField(t, ctx, "filter-prefix", "")
		click(t, ctx, "#filter-apply")
		waitFor(t, ctx, `document.querySelectorAll('#keys tr').length > 7`)
	})

	t.Run("usage", func(t *testing.T) {
		click(t, ctx, `.tabs a[data-tab="usage"]`)
		u := storeUsage(t, srv.Store, shop)
		waitFor(t, ctx, textContains("u-entries", fmt.Sprint(u.Entries)))
		waitFor(t, ctx, `document.querySelectorAll('#prefixes tr').length > 1 && document.querySelectorAll('#largest tr').length > 1`)
		rows := eval[[][]string](t, ctx, `[...document.querySelectorAll('#prefixes tr')].map(tr => [...tr.cells].slice(0, 3).map(td => td.textContent))`)
		var user []string
		for _, r := range rows {
			if r[0] == "user:" {
				user = r
			}
		}
		if user == nil || user[2] != "119" {
			t.Errorf("usage by prefix %q: want a user: row with 119 entries", rows)
		}
		largest := eval[string](t, ctx, `document.querySelector('#largest tr td').textContent`)
		if largest != "huge" {
			t.Errorf("the largest key shown first is %q, want huge", largest)
		}
		if got := text(t, ctx, "u-bytes"); got == "" || got == "0 B" {
			t.Errorf("used bytes shows %q for %d bytes", got, u.Bytes)
		}

		// The largest key opens in the key browser; a prefix filters it.
		click(t, ctx, "#largest tr a")
		waitFor(t, ctx, textContains("entry-key", "huge")+` && `+visible("#entry-value"))
		if got := text(t, ctx, "entry-type"); got != "text (not JSON)" {
			t.Errorf("huge opened from the usage tab has type %q", got)
		}
		click(t, ctx, `.tabs a[data-tab="usage"]`)
		waitFor(t, ctx, `[...document.querySelectorAll('#prefixes a')].some(a => a.textContent === 'user:')`)
		eval[bool](t, ctx, `[...document.querySelectorAll('#prefixes a')].find(a => a.textContent === 'user:').click() ?? true`)
		waitFor(t, ctx, `document.getElementById('filter-prefix').value === 'user:' && document.querySelectorAll('#keys tr').length === 100
			&& [...document.querySelectorAll('#keys tr')].every(tr => tr.dataset.key.startsWith('user:'))`)
		if keys := shownKeys(t, ctx); !strings.HasPrefix(keys[0], "user:") || !strings.HasPrefix(keys[99], "user:") {
			t.Errorf("the user: prefix from the usage tab shows keys %q … %q", keys[0], keys[99])
		}
	})

	var exported string
	t.Run("export", func(t *testing.T) {
		click(t, ctx, `.tabs a[data-tab="transfer"]`)
		click(t, ctx, "#export-button")
		waitFor(t, ctx, visible("#export-result"))
		if got := text(t, ctx, "export-result"); !strings.HasPrefix(got, "Exported ") {
			t.Fatalf("the export says %q", got)
		}
		exported = waitDownload(t, downloads)
		data, err := os.ReadFile(exported)
		if err != nil {
			t.Fatal(err)
		}
		var doc struct {
			Format  string `json:"format"`
			Project string `json:"project"`
			Entries []struct {
				Key         string          `json:"key"`
				Value       json.RawMessage `json:"value"`
				ValueBase64 []byte          `json:"value_base64"`
			} `json:"entries"`
		}
		if err := json.Unmarshal(data, &doc); err != nil {
			t.Fatalf("the downloaded export is not JSON: %v", err)
		}
		var keys []string
		for _, e := range doc.Entries {
			keys = append(keys, e.Key)
			want, _ := storeGet(t, srv.Store, shop, e.Key)
			got := []byte(e.Value)
			if e.ValueBase64 != nil {
				got = e.ValueBase64
			}
			if !bytes.Equal(compactJSON(got), compactJSON(want)) {
				t.Errorf("export of %s holds %s, the store %s", e.Key, short(got), short(want))
			}
		}
		if doc.Format != "kvsidecar-export" || doc.Project != shop || !slices.Equal(keys, storeKeys(t, srv.Store, shop, "")) {
			t.Errorf("export: format %q project %q with %d keys; want every key of shop", doc.Format, doc.Project, len(keys))
		}
		if got := text(t, ctx, "export-result"); !strings.Contains(got, fmt.Sprintf("Exported %d entries", len(keys))) {
			t.Errorf("the export says %q, want it to count %d entries", got, len(keys))
		}
		if w := eval[float64](t, ctx, `parseFloat(document.querySelector('#export-progress .progress-bar span').style.width)`); w != 100 {
			t.Errorf("the export's progress bar ends at %v%%", w)
		}
	})

	t.Run("import", func(t *testing.T) {
		// The key list is loaded before the import, and must not stay as it was after it.
		run(t, ctx, "open shop's keys", chromedp.Navigate(srv.PageURL+"#/p/shop/keys"))
		waitFor(t, ctx, `document.getElementById('filter-prefix').value === '' && document.querySelectorAll('#keys tr').length === 100`)
		click(t, ctx, `.tabs a[data-tab="transfer"]`)
		waitFor(t, ctx, visible("#import-file"))
		plain := filepath.Join(t.TempDir(), "by-hand.json")
		if err := os.WriteFile(plain, []byte(`{"imp:a": {"x": 1}, "imp:b": [1, 2], "imp:c": "s"}`), 0o600); err != nil {
			t.Fatal(err)
		}
		run(t, ctx, "choose the file", chromedp.SetUploadFiles(chromedp.ID("import-file"), []string{plain}))
		click(t, ctx, "#import-button")
		waitFor(t, ctx, visible("#import-result"))
		if got := text(t, ctx, "import-result"); !strings.HasPrefix(got, "Imported 3 entries") {
			t.Errorf("the import says %q", got)
		}
		if v, _ := storeGet(t, srv.Store, shop, "imp:a"); string(compactJSON(v)) != `{"x":1}` {
			t.Errorf("imp:a holds %q after the import", v)
		}
		click(t, ctx, `.tabs a[data-tab="keys"]`)
		waitFor(t, ctx, `!!document.querySelector('#keys tr[data-key="imp:a"]')`)
		click(t, ctx, `.tabs a[data-tab="transfer"]`)
		waitFor(t, ctx, visible("#import-file"))

		// The file exported above, into the other project, replacing what it had.
		if exported == "" {
			t.Skip("no export file to import (the export step failed)")
		}
		run(t, ctx, "open other", chromedp.Navigate(srv.PageURL+"#/p/other/transfer"))
		waitFor(t, ctx, visible("#import-file"))
		run(t, ctx, "choose the export", chromedp.SetUploadFiles(chromedp.ID("import-file"), []string{exported}))
		run(t, ctx, "tick replace", chromedp.Click(chromedp.ID("import-replace")))
		click(t, ctx, "#import-button")
		waitFor(t, ctx, `document.getElementById('confirm-dialog').open`)
		click(t, ctx, "#confirm-ok")
		waitFor(t, ctx, visible("#import-result"))
		if got := text(t, ctx, "import-result"); !strings.Contains(got, "cleared first") {
			t.Errorf("the replacing import says %q", got)
		}
		shopKeys := storeKeys(t, srv.Store, shop, "")
		shopKeys = slices.DeleteFunc(shopKeys, func(k string) bool { return strings.HasPrefix(k, "imp:") })
		if got := storeKeys(t, srv.Store, other, ""); !slices.Equal(got, shopKeys) {
			t.Errorf("other holds %d keys after importing shop's export, want shop's %d (hello replaced)", len(got), len(shopKeys))
		}
		for _, k := range []string{"big", "blob", "huge", "user:0042"} {
			a, _ := storeGet(t, srv.Store, shop, k)
			b, _ := storeGet(t, srv.Store, other, k)
			if !bytes.Equal(compactJSON(a), compactJSON(b)) {
				t.Errorf("%s: shop holds %s, other after the round trip %s", k, short(a), short(b))
			}
		}
		if d := expiry(t, srv.Store, other, "cart:1").Sub(expiry(t, srv.Store, shop, "cart:1")); d < -time.Second || d > time.Second {
			t.Errorf("cart:1's expiry moved by %v through export and import", d)
		}
	})

	t.Run("import dry run, and a refusal over quota", func(t *testing.T) {
		run(t, ctx, "open shop's transfer tab", chromedp.Navigate(srv.PageURL+"#/p/shop/transfer"))
		waitFor(t, ctx, visible("#import-file"))
		var doc strings.Builder
		doc.WriteString("{")
		for i := range 10 {
			if i > 0 {
				doc.WriteString(",")
			}
			fmt.Fprintf(&doc, `"q:%d": %q`, i, strings.Repeat("v", 60))
		}
		doc.WriteString("}")
		file := filepath.Join(t.TempDir(), "ten.json")
		if err := os.WriteFile(file, []byte(doc.String()), 0o600); err != nil {
			t.Fatal(err)
		}

		run(t, ctx, "choose the file", chromedp.SetUploadFiles(chromedp.ID("import-file"), []string{file}))
		eval[bool](t, ctx, `document.getElementById('import-dry').checked = true`)
		click(t, ctx, "#import-button")
		waitFor(t, ctx, textContains("import-result", "Dry run"))
		if got := text(t, ctx, "import-result"); !strings.Contains(got, "10 entries would be imported") {
			t.Errorf("the dry run says %q", got)
		}
		if keys := storeKeys(t, srv.Store, shop, "q:"); len(keys) != 0 {
			t.Fatalf("the dry run wrote %q", keys)
		}

		// Room for about half of the file.
		u := storeUsage(t, srv.Store, shop)
		if err := srv.Store.SetQuota(context.Background(), shop, u.Bytes+5*64); err != nil {
			t.Fatal(err)
		}
		defer srv.Store.SetQuota(context.Background(), shop, 0)
		eval[bool](t, ctx, `document.getElementById('import-dry').checked = false`)
		click(t, ctx, "#import-button")
		waitFor(t, ctx, textContains("import-result", "quota"))
		got := text(t, ctx, "import-result")
		written := len(storeKeys(t, srv.Store, shop, "q:"))
		if want := fmt.Sprintf("Import stopped: quota exceeded after %d entries were imported.", written); !strings.HasPrefix(got, want) {
			t.Errorf("the import over quota says %q, want it to begin %q (the store holds %d of the 10)", got, want, written)
		}
		if after := storeUsage(t, srv.Store, shop); after.Bytes > after.Quota {
			t.Errorf("usage %d is over the quota %d after the refused import", after.Bytes, after.Quota)
		}
		for i := range 10 {
			srv.Store.Delete(context.Background(), shop, fmt.Sprintf("q:%d", i))
		}
	})

	t.Run("quota", func(t *testing.T) {
		run(t, ctx, "open shop's settings", chromedp.Navigate(srv.PageURL+"#/p/shop/settings"))
		waitFor(t, ctx, visible("#quota-input"))
		setField(t, ctx, "quota-input", "5 MiB")
		click(t, ctx, "#quota-save")
		waitFor(t, ctx, textContains("quota-current", "own quota: 5 MiB"))
		if q := storeUsage(t, srv.Store, shop).Quota; q != 5<<20 {
			t.Errorf("the store's quota of shop is %d, want 5 MiB", q)
		}
		if meta := eval[string](t, ctx, `document.querySelector('#projects li[data-project="shop"] .pmeta').textContent`); !strings.Contains(meta, "/ 5 MiB") {
			t.Errorf("the project list says %q after the quota change", meta)
		}
		click(t, ctx, "#quota-reset")
		waitFor(t, ctx, textContains("quota-current", "default quota: 1 GiB"))
		if q := storeUsage(t, srv.Store, shop).Quota; q != store.DefaultQuota {
			t.Errorf("after Use the default the quota is %d", q)
		}
	})

	t.Run("global default quota", func(t *testing.T) {
		click(t, ctx, "#settings-link")
		waitFor(t, ctx, visible("#default-quota"))
		setField(t, ctx, "default-quota", "2 GiB")
		run(t, ctx, "save", chromedp.Click(chromedp.CSS("#default-quota-form button[type=submit]")))
		waitFor(t, ctx, textContains("default-quota-current", "now 2 GiB"))
		if q := storeUsage(t, srv.Store, "never-used").Quota; q != 2<<30 {
			t.Errorf("the default quota is %d after setting 2 GiB", q)
		}
	})

	t.Run("clear project needs its name typed", func(t *testing.T) {
		run(t, ctx, "open other's settings", chromedp.Navigate(srv.PageURL+"#/p/other/settings"))
		waitFor(t, ctx, visible("#clear-confirm"))
		if !eval[bool](t, ctx, `document.getElementById('clear-button').disabled`) {
			t.Error("Clear project is enabled before the name is typed")
		}
		setField(t, ctx, "clear-confirm", "othe")
		if !eval[bool](t, ctx, `document.getElementById('clear-button').disabled`) {
			t.Error("Clear project is enabled with part of the name typed")
		}
		setField(t, ctx, "clear-confirm", "other")
		click(t, ctx, "#clear-button")
		waitFor(t, ctx, textContains("clear-result", "was cleared"))
		if u := storeUsage(t, srv.Store, other); u.Entries != 0 || u.Bytes != 0 {
			t.Errorf("other holds %d entries (%d bytes) after Clear", u.Entries, u.Bytes)
		}
		if u := storeUsage(t, srv.Store, shop); u.Entries == 0 {
			t.Error("clearing other cleared shop too")
		}
	})
}

func TestPageProjectRole(t *testing.T) {
	srv := startAdmin(t)
	seedShop(t, srv.Store)
	ctx := newBrowser(t)
	signIn(t, ctx, srv.PageURL, srv.ShopToken)

	names := eval[[]string](t, ctx, `[...document.querySelectorAll('#projects li[data-project]')].map(li => li.dataset.project)`)
	if !slices.Equal(names, []string{shop}) {
		t.Errorf("a shop token sees projects %q, want only shop", names)
	}
	if who := text(t, ctx, "whoami"); who != "project shop" {
		t.Errorf("the top bar says %q", who)
	}
	waitFor(t, ctx, `document.querySelectorAll('#keys tr').length === 100`)
	click(t, ctx, `#keys tr[data-key="user:0001"]`)
	waitFor(t, ctx, textContains("entry-value", `"User 1"`))

	run(t, ctx, "open the settings tab", chromedp.Click(chromedp.CSS(`.tabs a[data-tab="settings"]`)))
	waitFor(t, ctx, visible("#quota-readonly"))
	if eval[bool](t, ctx, `!!document.getElementById('quota-form') || !!document.getElementById('quota-input')`) {
		t.Error("the quota form is on the page of a project token")
	}
	if eval[bool](t, ctx, `!!document.getElementById('settings-link')`) {
		t.Error("the global settings link is on the page of a project token")
	}
	if got := text(t, ctx, "quota-readonly-text"); !strings.Contains(got, "1 GiB") || !strings.Contains(got, "Only an administrator") {
		t.Errorf("a project token's settings say %q", got)
	}

	// Another project, by address: the API refuses, the page says so.
	run(t, ctx, "open other", chromedp.Navigate(srv.PageURL+"#/p/other/keys"))
	waitFor(t, ctx, `!document.getElementById('banner').hidden`)
	if got := banner(t, ctx); got == "" {
		t.Error("opening another project shows no error")
	}
	if n := len(shownKeys(t, ctx)); n != 0 && eval[string](t, ctx, `document.getElementById('project-name').textContent`) == other {
		t.Errorf("a shop token sees %d keys of other", n)
	}
}

func TestPageSignIn(t *testing.T) {
	srv := startAdmin(t)
	seedShop(t, srv.Store)
	ctx := newBrowser(t)

	run(t, ctx, "open the page", chromedp.Navigate(srv.PageURL), chromedp.WaitVisible(chromedp.ID("token")))
	run(t, ctx, "type a wrong token", chromedp.SendKeys(chromedp.ID("token"), "not-a-token"))
	click(t, ctx, "#signin-button")
	waitFor(t, ctx, visible("#signin-error"))
	if got := text(t, ctx, "signin-error"); !strings.Contains(got, "refused") {
		t.Errorf("a wrong token says %q", got)
	}
	if eval[bool](t, ctx, `!document.getElementById('app-view').hidden`) {
		t.Error("the app is shown after a wrong token")
	}
	if eval[bool](t, ctx, `sessionStorage.length !== 0`) {
		t.Error("a refused token was kept in sessionStorage")
	}

	signIn(t, ctx, srv.PageURL, srv.AdminToken)
	if eval[bool](t, ctx, `localStorage.length !== 0 || document.cookie !== ''`) {
		t.Error("the token went to localStorage or a cookie; it must stay in sessionStorage")
	}
	run(t, ctx, "reload", chromedp.Reload())
	waitFor(t, ctx, visible("#projects li[data-project]"))
	click(t, ctx, "#signout")
	waitFor(t, ctx, visible("#token"))
	if eval[bool](t, ctx, `sessionStorage.length !== 0`) {
		t.Error("Sign out left the token in sessionStorage")
	}

	// A token revoked while the page is open: the next call signs it out.
	signIn(t, ctx, srv.PageURL, srv.AdminToken)
	srv.revokeAdmin(t)
	click(t, ctx, "#projects-refresh")
	waitFor(t, ctx, visible("#signin-error"))
	if got := text(t, ctx, "signin-error"); !strings.HasPrefix(got, "Signed out: ") {
		t.Errorf("after the token was revoked the page says %q", got)
	}
	if eval[bool](t, ctx, `sessionStorage.getItem('kvsidecar.admin.token') !== null`) {
		t.Error("the revoked token is still in sessionStorage")
	}
}

// The pure helpers, in the browser that runs them.
func TestPageFormatHelpers(t *testing.T) {
	srv := startAdmin(t)
	ctx := newBrowser(t)
	run(t, ctx, "open the page", chromedp.Navigate(srv.PageURL), chromedp.WaitVisible(chromedp.ID("token")))
	cases := []struct{ expr, want string }{
		{`f.prettyJSON('{"a":[1,{}],"n":12345678901234567890,"s":"x,{\\"y"}')`, "{\n  \"a\": [\n    1,\n    {}\n  ],\n  \"n\": 12345678901234567890,\n  \"s\": \"x,{\\\"y\"\n}"},
		{`String(f.parseBytes('1 GiB'))`, "1073741824"},
		{`String(f.parseBytes('1.5 MB'))`, "1500000"},
		{`String(f.parseBytes('512'))`, "512"},
		{`(() => { try { f.parseBytes('5 parsecs'); return 'no error'; } catch (e) { return e.message; } })()`, `unknown size unit "parsecs": use B, KiB, MiB, GiB, TiB, KB, MB, GB or TB`},
		{`String(f.parseDuration('1h30m'))`, "5400000"},
		{`String(f.parseDuration('90'))`, "90000"},
		{`String(f.parseDuration(''))`, "0"},
		{`(() => { try { f.parseDuration('soon'); return 'no error'; } catch (e) { return e.message; } })()`, `"soon" is not a duration: write e.g. 90s, 30m, 1h30m or 2d (empty for no expiry)`},
		{`f.ttlInput(3723000)`, "1h2m3s"},
		{`f.formatBytes(1536) + ' ' + f.formatBytes(5 * 1024 ** 3) + ' ' + f.formatBytes(999)`, "1.5 KiB 5 GiB 999 B"},
		{`f.formatDuration(90061000)`, "1d 1h"},
		{`f.showKey('a\nb\u0000')`, `a\nb\u0000`},
		{`(() => { const c = new f.ExportCounter(); c.push('{"entries":[{"key":"a{[","value":{"v":[{}]}},'); c.push('{"key":"b\\"}"}]}'); return String(c.entries); })()`, "2"},
		{`f.hexString(f.parseHex('00ff 10')) + ' ' + f.bytesToBase64(f.base64ToBytes('AP8Q'))`, "00 ff 10 AP8Q"},
		{`JSON.stringify(f.rawFields('{"key":"k","value":[1,"]"],"size":3}'))`, `{"key":"\"k\"","value":"[1,\"]\"]","size":"3"}`},
	}
	for _, c := range cases {
		got := eval[string](t, ctx, `import('./format.js').then(f => `+c.expr+`)`)
		if got != c.want {
			t.Errorf("%s\n got %q\nwant %q", c.expr, got, c.want)
		}
	}
}

// The export's progress bar counts entries as they stream in, against the
// count the API announces.
func TestPageExportProgress(t *testing.T) {
	srv := startAdmin(t)
	const n = 20000 // about 3 MiB: the browser reads it in several chunks
	for b := 0; b < n/store.MaxBatchItems; b++ {
		items := make([]store.Item, store.MaxBatchItems)
		for i := range items {
			k := b*store.MaxBatchItems + i
			items[i] = store.Item{Key: fmt.Sprintf("item:%05d", k), Value: fmt.Appendf(nil, `{"n":%d,"pad":%q}`, k, strings.Repeat("p", 100))}
		}
		if err := srv.Store.SetMany(context.Background(), shop, items); err != nil {
			t.Fatal(err)
		}
	}
	ctx := newBrowser(t)
	if _, err := chromedp.CallBrowser(ctx, browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{
		Behavior: browser.SetDownloadBehaviorBehaviorAllow, DownloadPath: t.TempDir(),
	}); err != nil {
		t.Fatalf("allow downloads: %v", err)
	}
	signIn(t, ctx, srv.PageURL, srv.AdminToken)
	run(t, ctx, "open shop's transfer tab", chromedp.Navigate(srv.PageURL+"#/p/shop/transfer"))
	waitFor(t, ctx, visible("#export-button"))
	// Record every state the progress text passes through.
	eval[bool](t, ctx, `(() => { window.progress = [];
		new MutationObserver(() => window.progress.push(document.querySelector('#export-progress .progress-text').textContent))
			.observe(document.getElementById('export-progress'), {subtree: true, childList: true, characterData: true});
		return true; })()`)
	click(t, ctx, "#export-button")
	waitFor(t, ctx, visible("#export-result"))
	states := eval[[]string](t, ctx, `window.progress`)
	partial := 0
	for _, st := range states {
		if strings.Contains(st, " / 20,000 entries") && !strings.HasPrefix(st, "20,000 /") {
			partial++
		}
	}
	t.Logf("%d progress states, %d of them part-way; the first: %q", len(states), partial, states[:min(3, len(states))])
	if partial == 0 {
		t.Errorf("the progress never showed a part of the 20,000 entries; it showed %q", states)
	}
	if got := text(t, ctx, "export-result"); !strings.HasPrefix(got, "Exported 20,000 entries") {
		t.Errorf("the export says %q", got)
	}
}

// More projects than one page of the list: "Load more" brings the rest, and
// the filter narrows what is loaded.
func TestPageManyProjects(t *testing.T) {
	srv := startAdmin(t)
	const n = 230 // more than the page's 200 per request
	items := []store.Item{{Key: "k", Value: []byte("1")}}
	for i := range n {
		if err := srv.Store.SetMany(context.Background(), fmt.Sprintf("p%03d", i), items); err != nil {
			t.Fatal(err)
		}
	}
	ctx := newBrowser(t)
	signIn(t, ctx, srv.PageURL, srv.AdminToken)
	count := `document.querySelectorAll('#projects li[data-project]').length`
	if got := eval[int](t, ctx, count); got != 200 {
		t.Errorf("the first page lists %d projects, want 200", got)
	}
	click(t, ctx, "#projects-more")
	waitFor(t, ctx, count+` === `+fmt.Sprint(n))
	if eval[bool](t, ctx, `!document.getElementById('projects-more').hidden`) {
		t.Error("Load more is still offered after the last project")
	}
	setField(t, ctx, "project-filter", "p22")
	names := eval[[]string](t, ctx, `[...document.querySelectorAll('#projects li[data-project]')].map(li => li.dataset.project)`)
	if want := []string{"p220", "p221", "p222", "p223", "p224", "p225", "p226", "p227", "p228", "p229"}; !slices.Equal(names, want) {
		t.Errorf("filtering by p22 lists %q, want %q", names, want)
	}
}

// TestPageScreenshot takes the picture of the page that the README shows, on
// a small realistic data set. It writes docs/admin-page.png only when
// KV_ADMIN_SCREENSHOT names the file to write.
func TestPageScreenshot(t *testing.T) {
	srv := startAdmin(t)
	ctx := context.Background()
	s := srv.Store
	for i := 0; i < 240; i++ {
		v := fmt.Appendf(nil, `{"name":"User %d","email":"user%d@example.com","plan":%q,"visits":%d}`, i, i, []string{"free", "pro", "team"}[i%3], i*7)
		if err := s.Set(ctx, "checkout", fmt.Sprintf("user:%04d", i), v, 0); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 40; i++ {
		v := fmt.Appendf(nil, `{"items":[{"sku":"A-%d","qty":%d}],"total":%d.50,"currency":"EUR"}`, i, 1+i%3, 10+i)
		if err := s.Set(ctx, "checkout", fmt.Sprintf("cart:%04d", i), v, time.Duration(30+i*20)*time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 12; i++ {
		if err := s.Set(ctx, "checkout", fmt.Sprintf("session:%08x", 0x9e3779b9*uint32(i+1)), bytes.Repeat([]byte{'s'}, 300), 20*time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []struct {
		name  string
		n     int
		size  int
		quota int64
	}{{"image-resizer", 30, 20_000, 1 << 20}, {"notifications", 8, 200, 0}, {"search-api", 50, 9000, 0}} {
		for i := 0; i < p.n; i++ {
			if err := s.Set(ctx, p.name, fmt.Sprintf("cache:%d", i), bytes.Repeat([]byte{'1'}, p.size), 0); err != nil {
				t.Fatal(err)
			}
		}
		if p.quota > 0 {
			if err := s.SetQuota(ctx, p.name, p.quota); err != nil {
				t.Fatal(err)
			}
		}
	}

	bctx := newBrowser(t)
	signIn(t, bctx, srv.PageURL, srv.AdminToken)
	click(t, bctx, `#projects li[data-project="checkout"] a`)
	waitFor(t, bctx, `document.querySelectorAll('#keys tr').length === 100`)
	setField(t, bctx, "filter-prefix", "cart:")
	click(t, bctx, "#filter-apply")
	waitFor(t, bctx, `document.querySelectorAll('#keys tr').length === 40`)
	click(t, bctx, `#keys tr[data-key="cart:0003"]`)
	waitFor(t, bctx, textContains("entry-key", "cart:0003"))
	shot, err := chromedp.Run(bctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	img, err := png.Decode(bytes.NewReader(shot))
	if err != nil {
		t.Fatalf("the screenshot is not a PNG: %v", err)
	}
	if b := img.Bounds(); b.Dx() < 1200 || b.Dy() < 700 {
		t.Errorf("the screenshot is %dx%d", b.Dx(), b.Dy())
	}
	if out := os.Getenv("KV_ADMIN_SCREENSHOT"); out != "" {
		if err := os.WriteFile(out, shot, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s", out)
	}
}

// waitDownload waits for the one finished download in dir and returns its path.
func waitDownload(t *testing.T, dir string) string {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		files, _ := filepath.Glob(filepath.Join(dir, "*"))
		var done []string
		partial := false
		for _, f := range files {
			if strings.HasSuffix(f, ".crdownload") {
				partial = true
			} else {
				done = append(done, f)
			}
		}
		if len(done) == 1 && !partial {
			return done[0]
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("no finished download in %s", dir)
	return ""
}

// expiry returns the expiry of key as the store has it.
func expiry(t *testing.T, s store.Store, project, key string) time.Time {
	t.Helper()
	page, err := s.List(context.Background(), project, store.ListOptions{Prefix: key, Limit: 1})
	if err != nil || len(page.Entries) == 0 || page.Entries[0].Key != key {
		t.Fatalf("list %s/%s: %v (%d entries)", project, key, err, len(page.Entries))
	}
	return page.Entries[0].Expires
}

// short cuts b for an error message.
func short(b []byte) string {
	if len(b) > 80 {
		return fmt.Sprintf("%q… (%d bytes)", b[:80], len(b))
	}
	return fmt.Sprintf("%q", b)
}

// compactJSON returns JSON without insignificant whitespace, and any other
// bytes as they are, so values compare by content.
func compactJSON(b []byte) []byte {
	var buf bytes.Buffer
	if json.Compact(&buf, b) != nil {
		return b
	}
	return buf.Bytes()
}
