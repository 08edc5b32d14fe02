// Package browser_test drives the real page in headless Chromium: two tabs
// join, invite, decline, accept, see each other's video over WebRTC (with
// Chromium's fake camera), end the chat, reload and leave. Elements are
// found the way the page contract (docs/behaviour.md §7) names them: by role and
// accessible name, from Chromium's accessibility tree.
package browser_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/accessibility"
	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/dom"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/buddytok/buddytok/cmd/buddytok/allinone"
	"github.com/buddytok/buddytok/services/edge/identity"
	"github.com/buddytok/buddytok/test/kit"
)

const waitFor = 20 * time.Second

// chromiumPath finds the browser. It never skips: scripts/test installs
// Chromium when it is missing, and a missing browser fails the test.
func chromiumPath(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("CHROME_PATH"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("Chromium not found: install it (apt-get install chromium) or set CHROME_PATH; scripts/test does this")
	return ""
}

// tab is one browser tab.
type tab struct {
	t    *testing.T
	ctx  context.Context
	name string
}

func newBrowser(t *testing.T) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("use-fake-device-for-media-stream", true),
		chromedp.Flag("use-fake-ui-for-media-stream", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("autoplay-policy", "no-user-gesture-required"),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancelAlloc)
	bctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(cancel)
	if err := chromedp.Do(bctx); err != nil { // start the browser without a timeout
		t.Fatalf("start Chromium: %v", err)
	}
	return bctx
}

// openTab opens url in a new tab; prepare, if given, runs on the tab
// before the page loads (to intercept its requests, say).
func openTab(t *testing.T, browser context.Context, url, name string, prepare ...func(ctx context.Context) error) *tab {
	t.Helper()
	ctx, cancel := chromedp.NewContext(browser)
	t.Cleanup(cancel)
	// The first action on a context opens its tab and binds the tab to that
	// action's context: it must not carry a timeout.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("%s: open a tab: %v", name, err)
	}
	for _, p := range prepare {
		if err := p(ctx); err != nil {
			t.Fatalf("%s: prepare the tab: %v", name, err)
		}
	}
	tb := &tab{t: t, ctx: ctx, name: name}
	tb.do("open the page", chromedp.Navigate(url))
	return tb
}

// beforeLoad is an openTab preparation that runs script in the tab before
// each page's own scripts.
func beforeLoad(script string) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		_, err := chromedp.Call(ctx, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: script})
		return err
	}
}

func (tb *tab) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, waitFor)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		tb.t.Fatalf("%s: %s: %v", tb.name, what, err)
	}
}

// find returns the backend IDs of the visible nodes with role and name.
func find(role, name string) chromedp.Action[[]cdp.BackendNodeID] {
	return func(ctx context.Context, t *chromedp.Target) ([]cdp.BackendNodeID, error) {
		depth := int64(0)
		doc, err := cdp.Call(ctx, t, dom.GetDocument, dom.GetDocumentParams{Depth: &depth})
		if err != nil {
			return nil, err
		}
		res, err := cdp.Call(ctx, t, accessibility.QueryAXTree, accessibility.QueryAXTreeParams{
			NodeID: doc.Root.NodeID, Role: role, AccessibleName: name,
		})
		if err != nil {
			return nil, err
		}
		var ids []cdp.BackendNodeID
		for _, n := range res.Nodes {
			if !n.Ignored {
				ids = append(ids, n.BackendDOMNodeID)
			}
		}
		return ids, nil
	}
}

// call runs a JavaScript function with the node as this and returns its
// JSON result.
func call(id cdp.BackendNodeID, fn string) chromedp.Action[json.RawMessage] {
	return func(ctx context.Context, t *chromedp.Target) (json.RawMessage, error) {
		obj, err := cdp.Call(ctx, t, dom.ResolveNode, dom.ResolveNodeParams{BackendNodeID: id})
		if err != nil {
			return nil, err
		}
		byValue := true
		res, err := cdp.Call(ctx, t, runtime.CallFunctionOn, runtime.CallFunctionOnParams{
			FunctionDeclaration: fn, ObjectID: obj.Object.ObjectID, ReturnByValue: &byValue,
		})
		if err != nil {
			return nil, err
		}
		if res.ExceptionDetails != nil {
			return nil, fmt.Errorf("script error: %s", res.ExceptionDetails.Text)
		}
		return json.RawMessage(res.Result.Value), nil
	}
}

var errNotYet = errors.New("not yet")

// eventually retries check until it passes or waitFor runs out. The page
// updates asynchronously, so a browser test waits for what it expects.
func (tb *tab) eventually(what string, check func(ctx context.Context) error) {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, waitFor)
	defer cancel()
	var last error
	for {
		if last = check(ctx); last == nil {
			return
		}
		select {
		case <-ctx.Done():
			tb.t.Fatalf("%s: %s: %v", tb.name, what, last)
		case <-time.After(50 * time.Millisecond): // polling the page
		}
	}
}

// one waits for exactly one visible node with role and name.
func (tb *tab) one(role, name string) cdp.BackendNodeID {
	tb.t.Helper()
	var id cdp.BackendNodeID
	tb.eventually(fmt.Sprintf("find %s %q", role, name), func(ctx context.Context) error {
		ids, err := chromedp.Run(ctx, find(role, name))
		if err != nil {
			return err
		}
		if len(ids) != 1 {
			return fmt.Errorf("%d matches: %w", len(ids), errNotYet)
		}
		id = ids[0]
		return nil
	})
	return id
}

// absent waits until no visible node has role and name.
func (tb *tab) absent(role, name string) {
	tb.t.Helper()
	tb.eventually(fmt.Sprintf("%s %q gone", role, name), func(ctx context.Context) error {
		ids, err := chromedp.Run(ctx, find(role, name))
		if err == nil && len(ids) > 0 {
			return errNotYet
		}
		return err
	})
}

func (tb *tab) click(role, name string) {
	tb.t.Helper()
	tb.eventually(fmt.Sprintf("click %s %q", role, name), func(ctx context.Context) error {
		ids, err := chromedp.Run(ctx, find(role, name))
		if err != nil || len(ids) != 1 {
			return errors.Join(err, errNotYet)
		}
		_, err = chromedp.Run(ctx, call(ids[0], "function() { this.click(); }"))
		return err
	})
}

func (tb *tab) typeInto(role, name, text string) {
	tb.t.Helper()
	id := tb.one(role, name)
	ctx, cancel := context.WithTimeout(tb.ctx, waitFor)
	defer cancel()
	fn := fmt.Sprintf("function() { this.focus(); this.value = %q; this.dispatchEvent(new Event('input', {bubbles: true})); }", text)
	if _, err := chromedp.Run(ctx, call(id, fn)); err != nil {
		tb.t.Fatal(err)
	}
}

// textOf waits until the text of the node with role and name satisfies ok.
func (tb *tab) textOf(role, name, want string, ok func(text string) bool) {
	tb.t.Helper()
	var text string
	tb.eventually(fmt.Sprintf("%s %q shows %s", role, name, want), func(ctx context.Context) error {
		ids, err := chromedp.Run(ctx, find(role, name))
		if err != nil || len(ids) != 1 {
			return errors.Join(err, errNotYet)
		}
		raw, err := chromedp.Run(ctx, call(ids[0], "function() { return this.innerText; }"))
		if err != nil {
			return err
		}
		if err := json.Unmarshal(raw, &text); err != nil {
			return err
		}
		if !ok(text) {
			return fmt.Errorf("text is %q: %w", text, errNotYet)
		}
		return nil
	})
}

func has(parts ...string) func(string) bool {
	return func(s string) bool {
		for _, p := range parts {
			if !strings.Contains(s, p) {
				return false
			}
		}
		return true
	}
}

func lacks(part string) func(string) bool {
	return func(s string) bool { return !strings.Contains(s, part) }
}

// eval evaluates a JavaScript expression in the page until it is true.
func (tb *tab) until(what, expr string) {
	tb.t.Helper()
	tb.eventually(what, func(ctx context.Context) error {
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](expr))
		if err != nil {
			return err
		}
		if !ok {
			return errNotYet
		}
		return nil
	})
}

func (tb *tab) join() {
	tb.t.Helper()
	tb.typeInto("textbox", "Your name", tb.name)
	tb.click("button", "Join")
	tb.textOf("region", "You", "own name", has(tb.name, "available"))
}

// startSystem starts the all-in-one system the pages talk to (kit.Start's
// fast timings), with users kept grace after their tab goes; edits change
// its options.
func startSystem(t *testing.T, grace time.Duration, edits ...func(*allinone.Options)) *allinone.System {
	t.Helper()
	opts := kit.Options(kit.Topologies[0], kit.Settings{Grace: grace})
	for _, edit := range edits {
		edit(&opts)
	}
	return kit.StartWith(t, opts, false).Sys
}

func TestPageFlows(t *testing.T) {
	sys := startSystem(t, 2*time.Second)
	browser := newBrowser(t)
	url := sys.EdgeURLs[0]

	ann := openTab(t, browser, url, "Ann")
	ann.join()
	bob := openTab(t, browser, url, "Bob")
	bob.join()
	ann.textOf("list", "Buddies", "Bob available", has("Bob", "available"))
	bob.textOf("list", "Buddies", "Ann available", has("Ann", "available"))
	ann.until("the page names its video mode", `document.body.innerText.includes("WebRTC")`)

	// Invite, and decline.
	ann.click("button", "Invite Bob")
	ann.textOf("region", "You", "inviting", has("inviting"))
	ann.one("button", "Cancel invitation")
	bob.textOf("list", "Buddies", "Ann inviting", has("Ann", "inviting"))
	bob.absent("button", "Invite Ann") // nobody can invite an inviting user
	bob.textOf("list", "Invitations", "Ann's invitation", has("Ann"))
	bob.click("button", "Decline Ann")
	ann.textOf("status", "Notices", "declined notice", has("declined"))
	ann.textOf("region", "You", "available again", has("available"))
	bob.absent("list", "Invitations")

	// Invite, and cancel.
	ann.click("button", "Invite Bob")
	bob.one("button", "Accept Ann")
	ann.click("button", "Cancel invitation")
	bob.absent("button", "Accept Ann")

	// Invite, accept, see each other, end.
	ann.click("button", "Invite Bob")
	bob.click("button", "Accept Ann")
	for _, tb := range []*tab{ann, bob} {
		tb.one("button", "End chat")
		tb.textOf("region", "You", "chatting", has("chatting"))
		tb.until("the other side's video plays",
			`(() => { const v = document.getElementById("remote-video"); return !!v.srcObject && v.videoWidth > 0; })()`)
	}
	bob.textOf("list", "Buddies", "Ann chatting", has("Ann", "chatting"))
	ann.click("button", "End chat")
	for _, tb := range []*tab{ann, bob} {
		tb.absent("button", "End chat")
		tb.textOf("region", "You", "available after the chat", has("available"))
	}

	// A reload resumes the same user, in the same chat.
	ann.click("button", "Invite Bob")
	bob.click("button", "Accept Ann")
	ann.one("button", "End chat")
	ann.do("reload", chromedp.Reload())
	ann.textOf("region", "You", "resumed in the chat", has("Ann", "chatting"))
	ann.one("button", "End chat")
	bob.textOf("list", "Buddies", "Ann still there", has("Ann", "chatting"))

	// Bob closes his tab: he leaves every list and Ann's chat ends.
	if err := chromedp.Cancel(bob.ctx); err != nil {
		t.Fatal(err)
	}
	ann.textOf("list", "Buddies", "Bob gone", lacks("Bob"))
	ann.absent("button", "End chat")
	ann.textOf("region", "You", "available once Bob left", has("available"))
}

// A page whose resume fails for a passing reason (presence restarting)
// keeps its secret and tries again: once presence is back, it is the same
// user, in the same chat. Only resume_failed starts over.
func TestPageResumesThroughAPresenceRestart(t *testing.T) {
	sys := startSystem(t, time.Minute)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	browser := newBrowser(t)
	url := sys.EdgeURLs[0]
	ann := openTab(t, browser, url, "Ann")
	ann.join()
	bob := openTab(t, browser, url, "Bob")
	bob.join()
	ann.click("button", "Invite Bob")
	bob.click("button", "Accept Ann")
	ann.one("button", "End chat")

	if err := sys.Stop(allinone.Presence, 0); err != nil {
		t.Fatal(err)
	}
	ann.do("reload", chromedp.Reload())
	ann.textOf("status", "Connection", "a resume that failed and is retried", has("trying again"))
	ann.until("the secret is kept", `sessionStorage.getItem("buddytok.session") !== null`)
	if err := sys.AddReplica(ctx, allinone.Presence); err != nil {
		t.Fatal(err)
	}
	ann.textOf("region", "You", "resumed in the chat", has("Ann", "chatting"))
	ann.one("button", "End chat")
	ann.textOf("status", "Connection", "connected", has("Connected"))
	bob.textOf("list", "Buddies", "one Ann, still chatting", func(s string) bool {
		return strings.Count(s, "Ann") == 1 && strings.Contains(s, "chatting")
	})
}

// The edge closes a socket that does not join in time; the page waits
// quietly and connects again when the person joins.
func TestPageJoinsAfterTheEdgeClosedItsIdleSocket(t *testing.T) {
	sys := startSystem(t, 2*time.Second, func(o *allinone.Options) { o.Edge.JoinTimeout = time.Second })
	browser := newBrowser(t)
	ann := openTab(t, browser, sys.EdgeURLs[0], "Ann")
	ann.textOf("status", "Connection", "the idle socket closed", has("Not connected"))
	ann.join()
	ann.textOf("status", "Connection", "connected", has("Connected"))
	bob := openTab(t, browser, sys.EdgeURLs[0], "Bob")
	bob.join()
	bob.textOf("list", "Buddies", "Ann, joined after her socket was closed", has("Ann", "available"))
}

// The page runs under the edge's Content-Security-Policy: before the video
// mode is known it lets opentok.js come from its CDN, and refuses a script
// from anywhere else; the browser reports each refusal.
func TestPageContentSecurityPolicy(t *testing.T) {
	sys := startSystem(t, 2*time.Second)
	browser := newBrowser(t)
	ann := openTab(t, browser, sys.EdgeURLs[0], "Ann")
	ann.textOf("status", "Connection", "connected", has("Connected"))
	ann.do("try two scripts", chromedp.Evaluate[chromedp.Void](`(() => {
		window.blocked = [];
		document.addEventListener("securitypolicyviolation", (e) => window.blocked.push(e.blockedURI));
		for (const src of ["https://static.opentok.com/v2/js/opentok.min.js", "https://evil.example/x.js"]) {
			const s = document.createElement("script");
			s.src = src;
			document.head.appendChild(s);
		}
	})()`))
	ann.until("the foreign script refused", `window.blocked.some((u) => u.startsWith("https://evil.example"))`)
	ann.until("opentok.js not refused", `!window.blocked.some((u) => u.includes("opentok"))`)
	// The page itself works under the policy.
	ann.join()
}

// With identity tokens required, the page passes the token of its link
// (#token=...) on the upgrade, and the person is online under the token's
// name.
func TestPageWithIdentityToken(t *testing.T) {
	secret := []byte("an HMAC secret of at least 32 bytes, for tests")
	sys := startSystem(t, 2*time.Second, func(o *allinone.Options) { o.Edge.Identity = identity.Config{HMACSecret: secret} })
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: secret}, nil)
	if err != nil {
		t.Fatal(err)
	}
	token, err := jwt.Signed(signer).Claims(map[string]any{"sub": "ann-1", "name": "Ann Verified", "exp": time.Now().Add(time.Hour).Unix()}).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	browser := newBrowser(t)
	ann := openTab(t, browser, sys.EdgeURLs[0]+"/#token="+token, "Ann Verified")
	ann.typeInto("textbox", "Your name", "Typed Name")
	ann.click("button", "Join")
	ann.textOf("region", "You", "the token's name", has("Ann Verified", "available"))
}

// Names that only look alike are told apart: a Latin "Alice" and one with
// a Cyrillic "А" each get a short suffix in the list and on their Invite
// buttons; a name like no other gets none.
func TestPageTellsLookAlikeNamesApart(t *testing.T) {
	sys := startSystem(t, 2*time.Second)
	browser := newBrowser(t)
	url := sys.EdgeURLs[0]
	latin := openTab(t, browser, url, "Alice")
	latin.join()
	cyrillic := openTab(t, browser, url, "\u0410lice")
	cyrillic.join()
	bob := openTab(t, browser, url, "Bob")
	bob.join()
	bob.textOf("list", "Buddies", "both Alices with a suffix", func(s string) bool {
		return strings.Count(s, "lice (#") == 4 // each name, and its Invite button
	})
	bob.eventually("two distinct Invite buttons", func(ctx context.Context) error {
		ids, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll("#buddies button")].map((b) => b.textContent)`))
		if err != nil {
			return err
		}
		if len(ids) != 2 || ids[0] == ids[1] || !strings.Contains(ids[0], "(#") {
			return fmt.Errorf("%w: buttons %q", errNotYet, ids)
		}
		return nil
	})
	latin.textOf("list", "Buddies", "Bob without a suffix", func(s string) bool {
		return strings.Contains(s, "Bob") && !strings.Contains(s, "Bob (#")
	})
}
