package browser_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/chromedp"
)

// watchPage runs before the page's own scripts: it records the
// notifications the page shows and its requests for permission, keeps
// every text the connection indicator shows, and lets the test hide the
// tab (window.testHide(true)) as switching to another tab would: headless
// Chromium has no tab strip to switch with.
const watchPage = `
window.shownNotifications = [];
window.permissionRequests = 0;
if ("Notification" in window) {
  const Real = window.Notification;
  window.Notification = class extends Real {
    constructor(title, options) {
      super(title, options);
      window.shownNotifications.push({ title, body: options && options.body });
    }
  };
  const ask = Real.requestPermission.bind(Real);
  window.Notification.requestPermission = () => { window.permissionRequests++; return ask(); };
}
let hidden = false;
Object.defineProperty(document, "hidden", { get: () => hidden });
Object.defineProperty(document, "visibilityState", { get: () => (hidden ? "hidden" : "visible") });
window.testHide = (h) => { hidden = h; document.dispatchEvent(new Event("visibilitychange")); };
window.connectionTexts = [];
document.addEventListener("DOMContentLoaded", () => {
  const el = document.getElementById("connection-text");
  const keep = () => window.connectionTexts.push(el.textContent);
  keep();
  new MutationObserver(keep).observe(el, { childList: true, characterData: true, subtree: true });
});
`

var watch = beforeLoad(watchPage)

// An invitation that arrives while the tab is hidden shows a browser
// notification and a count in the title; the page asks for permission to
// notify when the person joins, never on load.
func TestPageNotifiesWhileHidden(t *testing.T) {
	sys := startSystem(t, 2*time.Second)
	b := newBrowser(t)
	url := sys.EdgeURLs[0]

	bob := openTab(t, b, url, "Bob", watch)
	bob.textOf("status", "Connection", "connected", has("Connected"))
	bob.until("no permission asked on load", `window.permissionRequests === 0`)
	bob.join()
	bob.until("permission asked at the join", `window.permissionRequests === 1`)
	// The person allows notifications.
	ctx, cancel := context.WithTimeout(bob.ctx, waitFor)
	defer cancel()
	if _, err := chromedp.CallBrowser(ctx, browser.SetPermission, browser.SetPermissionParams{
		Permission: &browser.PermissionDescriptor{Name: "notifications"}, Setting: browser.PermissionSettingGranted, Origin: url,
	}); err != nil {
		t.Fatal(err)
	}
	bob.until("notifications allowed", `Notification.permission === "granted"`)

	ann := openTab(t, b, url, "Ann")
	ann.join()
	bob.do("hide the tab", chromedp.Evaluate[chromedp.Void](`window.testHide(true)`))
	ann.click("button", "Invite Bob")
	bob.until("a notification of Ann's invitation",
		`window.shownNotifications.length === 1 && window.shownNotifications[0].body.includes("Ann invites you")`)
	bob.until("the title counts it", `document.title === "(1) BuddyTok — Lobby"`)

	// Back in the tab: the invitation is there to answer; once answered,
	// the title has nothing to count.
	bob.do("show the tab", chromedp.Evaluate[chromedp.Void](`window.testHide(false)`))
	bob.click("button", "Decline Ann")
	bob.until("the count gone", `document.title === "BuddyTok — Lobby"`)
	bob.until("no second notification", `window.shownNotifications.length === 1`)
}

// When the edge drops the socket (a restart), the page says so, connects
// again, with backoff and jitter, and resumes: the same user, in the same
// chat.
func TestPageReconnectsAfterTheEdgeDropsIt(t *testing.T) {
	sys := startSystem(t, 10*time.Second)
	b := newBrowser(t)
	url := sys.EdgeURLs[0]
	ann := openTab(t, b, url, "Ann", watch)
	ann.join()
	bob := openTab(t, b, url, "Bob")
	bob.join()
	ann.click("button", "Invite Bob")
	bob.click("button", "Accept Ann")
	ann.one("button", "End chat")
	annID := ann.userID()

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := sys.RestartEdge(ctx, 0); err != nil {
		t.Fatal(err)
	}
	ann.until("the page said the connection was lost", `window.connectionTexts.some((s) => s.startsWith("Connection lost — reconnecting"))`)
	ann.textOf("status", "Connection", "connected again", has("Connected"))
	ann.textOf("region", "You", "the same user, in the chat", has("Ann", "chatting"))
	ann.one("button", "End chat")
	if got := ann.userID(); got != annID {
		t.Fatalf("Ann came back as %s, was %s", got, annID)
	}
	bob.textOf("list", "Buddies", "Ann still chatting", has("Ann", "chatting"))
}

// userID is the user the tab has kept in its session.
func (tb *tab) userID() string {
	tb.t.Helper()
	var id string
	tb.eventually("the tab's user", func(ctx context.Context) error {
		s, err := chromedp.Run(ctx, chromedp.Evaluate[string](`(JSON.parse(sessionStorage.getItem("buddytok.session")) || {}).user_id || ""`))
		if err != nil {
			return err
		}
		if s == "" {
			return errNotYet
		}
		id = s
		return nil
	})
	return id
}

// A duplicated tab (it carries the first tab's session) takes the user
// over, chat and all: the first tab tells its person that the chat moved
// to another tab, and starts over as a new visitor.
func TestPageSupersededByADuplicatedTab(t *testing.T) {
	sys := startSystem(t, 10*time.Second)
	b := newBrowser(t)
	url := sys.EdgeURLs[0]
	ann := openTab(t, b, url, "Ann")
	ann.join()
	bob := openTab(t, b, url, "Bob")
	bob.join()
	ann.click("button", "Invite Bob")
	bob.click("button", "Accept Ann")
	ann.one("button", "End chat")
	session, err := chromedp.Run(ann.ctx, chromedp.Evaluate[string](`sessionStorage.getItem("buddytok.session")`))
	if err != nil {
		t.Fatal(err)
	}

	dup := openTab(t, b, url, "Ann's second tab")
	dup.do("carry the session over", chromedp.Evaluate[chromedp.Void](`sessionStorage.setItem("buddytok.session", `+jsString(session)+`)`), chromedp.Reload())
	dup.textOf("region", "You", "Ann, in the chat", has("Ann", "chatting"))
	dup.one("button", "End chat")

	ann.textOf("alert", "Errors", "the chat moved", has("Your chat moved to another tab"))
	ann.one("textbox", "Your name")
	ann.absent("button", "End chat")
}

// jsString quotes s as a JavaScript string.
func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
