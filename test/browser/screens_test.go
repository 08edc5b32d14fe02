package browser_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/accessibility"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
)

// screenshotDir is where the screens are written: docs/screenshots with
// BUDDYTOK_SCREENSHOTS=1 (to update the README's pictures), else a
// temporary directory, so that a test run leaves the checkout as it was.
func screenshotDir(t *testing.T) string {
	if os.Getenv("BUDDYTOK_SCREENSHOTS") == "1" {
		dir, err := filepath.Abs("../../docs/screenshots")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	return t.TempDir()
}

// screenshot writes what the tab shows to dir/name.png.
func (tb *tab) screenshot(dir, name string) {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, waitFor)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		tb.t.Fatalf("%s: screenshot %s: %v", tb.name, name, err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
		tb.t.Fatal(err)
	}
}

// viewport sets the tab's window size, as a phone's (mobile) or a desktop's.
func (tb *tab) viewport(width, height int64, mobile bool) {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, waitFor)
	defer cancel()
	if _, err := chromedp.Call(ctx, emulation.SetDeviceMetricsOverride, emulation.SetDeviceMetricsOverrideParams{
		Width: width, Height: height, DeviceScaleFactor: 1, Mobile: mobile,
	}); err != nil {
		tb.t.Fatal(err)
	}
}

// colorScheme makes the tab's system setting light or dark.
func (tb *tab) colorScheme(scheme string) {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, waitFor)
	defer cancel()
	if _, err := chromedp.Call(ctx, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
		Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: scheme}},
	}); err != nil {
		tb.t.Fatal(err)
	}
}

// fitsWidth waits until the page needs no horizontal scrolling.
func (tb *tab) fitsWidth(screen string) {
	tb.t.Helper()
	tb.until(screen+": no horizontal scrolling", `document.documentElement.scrollWidth <= window.innerWidth`)
}

// namedRoles are the roles whose every node must have an accessible name.
// (Chromium names a video element "Unable to play media." whatever its
// label, so videos are checked in the DOM instead.)
var namedRoles = []string{"button", "textbox", "link", "checkbox", "image", "img", "combobox", "region"}

// audit checks the screen through Chromium's own accessibility tree: every
// control and image has a name, the banner and main landmarks and the
// headings are there, and Tab visits every control, each once, and goes on
// (no focus trap).
func (tb *tab) audit(screen string) {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, waitFor)
	defer cancel()
	tree, err := chromedp.Call(ctx, accessibility.GetFullAXTree, accessibility.GetFullAXTreeParams{})
	if err != nil {
		tb.t.Fatalf("%s: accessibility tree: %v", screen, err)
	}
	roles := map[string]int{}
	var headings []string
	for _, n := range tree.Nodes {
		if n.Ignored || n.Role == nil {
			continue
		}
		role := strings.ToLower(strings.Trim(string(n.Role.Value), `"`)) // Chromium's own roles are capitalised ("Video")
		name := ""
		if n.Name != nil {
			_ = json.Unmarshal(n.Name.Value, &name)
		}
		roles[role]++
		if slices.Contains(namedRoles, role) && strings.TrimSpace(name) == "" {
			tb.t.Errorf("%s: %s: a %s without an accessible name", tb.name, screen, role)
		}
		if role == "heading" {
			headings = append(headings, name)
		}
	}
	unnamed, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll("video, img")]
		.filter((e) => e.offsetParent !== null && !(e.getAttribute("aria-label") || e.getAttribute("alt") || "").trim())
		.map((e) => e.id || e.tagName)`))
	if err != nil {
		tb.t.Fatal(err)
	}
	for _, u := range unnamed {
		tb.t.Errorf("%s: %s: %s has no label", tb.name, screen, u)
	}
	for _, landmark := range []string{"banner", "main"} {
		if roles[landmark] != 1 {
			tb.t.Errorf("%s: %s: %d %s landmarks, want 1", tb.name, screen, roles[landmark], landmark)
		}
	}
	if len(headings) < 2 || headings[0] != "BuddyTok" {
		tb.t.Errorf("%s: %s: headings %q, want BuddyTok and the screen's", tb.name, screen, headings)
	}

	// Tab through the page: every control once, then around again.
	controls, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll("button, input, a[href]")]
		.filter((e) => e.offsetParent !== null && !e.disabled).map((e) => e.id || e.dataset.key)`))
	if err != nil {
		tb.t.Fatal(err)
	}
	if err := chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](`document.activeElement.blur()`)); err != nil {
		tb.t.Fatal(err)
	}
	var visited []string
	for range len(controls) + 3 {
		if err := chromedp.Do(ctx, chromedp.KeyEvent(kb.Tab)); err != nil {
			tb.t.Fatal(err)
		}
		id, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.activeElement.id || document.activeElement.dataset.key || document.activeElement.tagName`))
		if err != nil {
			tb.t.Fatal(err)
		}
		visited = append(visited, id)
	}
	for _, c := range controls {
		if !slices.Contains(visited, c) {
			tb.t.Errorf("%s: %s: Tab never reaches %q (visited %q)", tb.name, screen, c, visited)
		}
	}
	if len(visited) > len(controls) && visited[len(controls)-1] == visited[len(controls)] {
		tb.t.Errorf("%s: %s: Tab is stuck on %q", tb.name, screen, visited[len(controls)])
	}
}

// focused waits until the focused element is the one with id.
func (tb *tab) focused(after, id string) {
	tb.t.Helper()
	tb.until(fmt.Sprintf("after %s the focus is on #%s", after, id), fmt.Sprintf(`document.activeElement && document.activeElement.id === %q`, id))
}

// pressOn presses Tab until the focused control is named name, then Enter.
func (tb *tab) pressOn(name string) {
	tb.t.Helper()
	tb.eventually(fmt.Sprintf("Tab to %q and press Enter", name), func(ctx context.Context) error {
		for range 40 {
			text, err := chromedp.Run(ctx, chromedp.Evaluate[string](`(document.activeElement.textContent || "").trim()`))
			if err != nil {
				return err
			}
			if text == name {
				return chromedp.Do(ctx, chromedp.KeyEvent(kb.Enter))
			}
			if err := chromedp.Do(ctx, chromedp.KeyEvent(kb.Tab)); err != nil {
				return err
			}
		}
		return fmt.Errorf("%q is not reachable by Tab: %w", name, errNotYet)
	})
}

// The whole flow by keyboard alone, and where the focus goes after each
// action: Join (the buddy list), Invite (Cancel invitation), Decline (the
// next invitation, else the buddy list), Accept (End chat), End chat (the
// buddy list). An invitation that arrives while the tab is visible is
// announced in the live region; "You invited Bob." is gone once the chat
// has started. Each screen passes the accessibility audit.
func TestPageByKeyboardAlone(t *testing.T) {
	sys := startSystem(t, 2*time.Second)
	browser := newBrowser(t)
	url := sys.EdgeURLs[0]
	ann := openTab(t, browser, url, "Ann")
	ann.textOf("status", "Connection", "connected", has("Connected"))
	ann.audit("the join screen")
	ann.typeInto("textbox", "Your name", "Ann")
	ann.do("Enter", chromedp.KeyEvent(kb.Enter))
	ann.focused("Join", "buddies-heading")
	bob := openTab(t, browser, url, "Bob")
	bob.typeInto("textbox", "Your name", "Bob")
	bob.do("Enter", chromedp.KeyEvent(kb.Enter))
	bob.focused("Join", "buddies-heading")

	ann.pressOn("Invite Bob")
	ann.focused("Invite", "cancel")
	bob.textOf("status", "Notices", "the invitation announced", has("Ann invites you"))
	bob.audit("an invitation")
	bob.pressOn("Decline Ann")
	bob.focused("Decline", "buddies-heading")
	ann.textOf("status", "Notices", "the decline", has("Bob declined your invitation"))

	ann.pressOn("Invite Bob")
	ann.textOf("status", "Notices", "the invite's notice", has("You invited Bob."))
	bob.pressOn("Accept Ann")
	bob.focused("Accept", "end-chat")
	ann.textOf("status", "Notices", "no stale notice once in the chat", lacks("You invited Bob."))
	bob.textOf("status", "Notices", "no stale announcement once it is accepted", lacks("Ann invites you"))
	bob.audit("the chat")
	bob.pressOn("End chat")
	bob.focused("End chat", "buddies-heading")
	ann.absent("button", "End chat")
	ann.audit("the buddy list")
}

// Every screen fits a 360-pixel-wide phone without horizontal scrolling,
// and is written as a picture (docs/screenshots, for the README, with
// BUDDYTOK_SCREENSHOTS=1), on a desktop and a phone, and in the dark theme
// that follows the system setting.
func TestPageScreens(t *testing.T) {
	sys := startSystem(t, 2*time.Second)
	browser := newBrowser(t)
	url := sys.EdgeURLs[0]
	dir := screenshotDir(t)
	ann := openTab(t, browser, url, "Ann")
	bob := openTab(t, browser, url, "Bob")
	cy := openTab(t, browser, url, "Cy Long-Named Person With A Name That Wraps")
	for _, tb := range []*tab{ann, bob} {
		tb.viewport(1000, 720, false)
	}
	cy.viewport(360, 740, true)
	ann.textOf("status", "Connection", "connected", has("Connected"))
	ann.screenshot(dir, "join")
	cy.fitsWidth("join")
	for _, tb := range []*tab{ann, bob, cy} {
		tb.join()
	}
	cy.click("button", "Invite Ann")
	bob.click("button", "Invite Ann")
	ann.textOf("list", "Invitations", "two invitations", has("Bob", "Cy"))
	ann.screenshot(dir, "invitations")
	cy.fitsWidth("inviting")
	cy.screenshot(dir, "inviting-360")
	ann.click("button", "Accept Bob")
	for _, tb := range []*tab{ann, bob} {
		tb.until("the other side's video plays",
			`(() => { const v = document.getElementById("remote-video"); return !!v.srcObject && v.videoWidth > 0; })()`)
	}
	time.Sleep(time.Second) // the fake camera's picture, not its first black frame
	ann.screenshot(dir, "chat")
	cy.textOf("list", "Buddies", "Ann and Bob chatting", has("Ann", "Bob", "chatting"))
	cy.fitsWidth("buddies")
	cy.screenshot(dir, "buddies-360")
	cy.colorScheme("dark")
	cy.screenshot(dir, "buddies-360-dark")
	bob.viewport(360, 740, true)
	bob.fitsWidth("chat")
	bob.screenshot(dir, "chat-360")
}
