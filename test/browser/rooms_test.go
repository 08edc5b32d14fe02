package browser_test

import (
	"context"
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/buddytok/buddytok/pkg/protocol"
)

// copyCatcher makes a tab's "Copy link" write to window.copied, which the
// test reads, rather than to the system clipboard a headless browser lacks.
const copyCatcher = `Object.defineProperty(navigator, "clipboard", {value: {writeText: async (t) => { window.copied = t; }}});`

func (tb *tab) eval(what, expr string, out any) {
	tb.t.Helper()
	tb.eventually(what, func(ctx context.Context) error {
		raw, err := chromedp.Run(ctx, chromedp.Evaluate[json.RawMessage](expr, chromedp.EvalAwaitPromise))
		if err != nil {
			return err
		}
		return json.Unmarshal(raw, out)
	})
}

// Two tabs in a room made with "New room", the second opened at the link
// the first copied; one tab in another room; one in the lobby. Each lists
// only its own room's users, and shows its room's name in the header and
// the title; a reload stays in the room. A link with a name that breaks
// the rule says so, and the page's rule is the server's.
func TestPageRooms(t *testing.T) {
	sys := startSystem(t, 2*time.Second)
	browser := newBrowser(t)
	url := sys.EdgeURLs[0]

	ann := openTab(t, browser, url+"/", "Ann", beforeLoad(copyCatcher))
	ann.click("button", "New room")
	ann.until("the new room's link", `location.pathname.startsWith("/r/")`)
	ann.join()
	ann.click("button", "Copy link")
	var link string
	ann.eval("the copied link", `window.copied || ""`, &link)
	var path string
	ann.eval("the room's path", `location.pathname`, &path)
	room := strings.TrimPrefix(path, "/r/")
	if link != url+path || protocol.CheckRoom(room) != nil || len(room) != 24 {
		t.Fatalf("copied %q on page %q: want the page's own link to a new room", link, path)
	}
	ann.textOf("region", "Room", "the room's name", has(room))
	var title string
	ann.eval("the title", `document.title`, &title)
	if !strings.Contains(title, room) {
		t.Fatalf("title %q does not name room %s", title, room)
	}

	bob := openTab(t, browser, link, "Bob")
	bob.join()
	cy := openTab(t, browser, url+"/r/other-room", "Cy")
	cy.join()
	dee := openTab(t, browser, url+"/", "Dee")
	dee.join()
	dee.textOf("region", "Room", "the lobby", has("Lobby"))

	ann.textOf("list", "Buddies", "Bob only", func(s string) bool { return has("Bob")(s) && lacks("Cy")(s) && lacks("Dee")(s) })
	bob.textOf("list", "Buddies", "Ann only", func(s string) bool { return has("Ann")(s) && lacks("Cy")(s) && lacks("Dee")(s) })
	for _, tb := range []*tab{cy, dee} {
		tb.until("alone in its room", `!document.getElementById("alone").hidden && document.getElementById("buddies").children.length === 0`)
	}
	// Still so after the others act.
	ann.click("button", "Invite Bob")
	bob.click("button", "Accept Ann")
	bob.one("button", "End chat")
	for _, tb := range []*tab{cy, dee} {
		tb.until("still alone", `document.getElementById("buddies").children.length === 0 && document.getElementById("invitations-section").hidden`)
	}
	ann.do("reload", chromedp.Reload())
	ann.textOf("region", "You", "resumed in the chat", has("Ann", "chatting"))
	ann.textOf("region", "Room", "the same room", has(room))

	// A name the rule refuses is said so, and offers a new room.
	bad := openTab(t, browser, url+"/r/Team", "Bad")
	bad.until("why the link is not a room", `!document.getElementById("room-error").hidden && document.getElementById("room-error").textContent.includes("lowercase")`)
	bad.one("button", "New room")
	bad.absent("textbox", "Your name")

	// New rooms: the rule's, in five groups of four of Crockford's
	// base32, none twice.
	var made []string
	dee.eval("rooms the page makes", `import("/rooms.js").then(m => Array.from({length: 2000}, m.newRoom))`, &made)
	form := regexp.MustCompile(`^[0-9a-hjkmnp-tv-z]{4}(-[0-9a-hjkmnp-tv-z]{4}){4}$`)
	seen := map[string]bool{}
	for _, r := range made {
		if !form.MatchString(r) || protocol.CheckRoom(r) != nil || seen[r] {
			t.Fatalf("the page made room %q (seen before: %t)", r, seen[r])
		}
		seen[r] = true
	}

	// The page's rule is the server's.
	cases := []string{"lobby", "a", "a-b", "-a", "a-", "Team", "te am", "a.b", "a*", "a>", "tëam", strings.Repeat("a", protocol.MaxRoomLen), strings.Repeat("a", protocol.MaxRoomLen+1), ""}
	in, _ := json.Marshal(cases)
	var verdicts []string
	dee.eval("the page's rule", `import("/rooms.js").then(m => `+string(in)+`.map(m.checkRoom))`, &verdicts)
	for i, c := range cases {
		if page, server := verdicts[i] == "", protocol.CheckRoom(c) == nil; page != server {
			t.Errorf("room %q: the page says ok=%t (%q), the server ok=%t", c, page, verdicts[i], server)
		}
	}
}
