package browser_test

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/fetch"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/buddytok/buddytok/cmd/buddytok/allinone"
	"github.com/buddytok/buddytok/pkg/opentok"
	"github.com/buddytok/buddytok/pkg/opentok/opentoktest"
	"github.com/buddytok/buddytok/services/tokens/tokens"
)

const (
	otKey    = "46001234"
	otSecret = "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678"
)

// fakeOT is a test double of opentok.js's OT global, served only to the
// test's browser in place of the library from OpenTok's CDN. It records
// every call in window.otCalls; once connected, it announces the other
// party's stream, as OpenTok does when the other side publishes.
const fakeOT = `
window.otCalls = [];
const record = (call) => window.otCalls.push(call);
window.OT = {
  initSession(apiKey, sessionId) {
    record({ fn: "initSession", apiKey, sessionId });
    const handlers = {};
    return {
      on(event, handler) { handlers[event] = handler; },
      connect(token, done) {
        record({ fn: "connect", token });
        setTimeout(() => {
          done();
          setTimeout(() => handlers.streamCreated && handlers.streamCreated({ stream: { streamId: "the-other-party" } }), 20);
        }, 10);
      },
      publish(publisher) { record({ fn: "publish", target: publisher.target }); },
      subscribe(stream, target) {
        record({ fn: "subscribe", stream: stream.streamId, target });
        const el = document.createElement("div");
        el.textContent = "remote video";
        document.getElementById(target).append(el);
      },
      disconnect() { record({ fn: "disconnect" }); },
    };
  },
  initPublisher(target) {
    record({ fn: "initPublisher", target });
    return {
      target,
      publishAudio(on) { record({ fn: "publishAudio", on }); },
      publishVideo(on) { record({ fn: "publishVideo", on }); },
    };
  },
};
`

// serveOpenTokJS answers the page's request for opentok.js from OpenTok's
// CDN with body (the double), or fails it when body is empty: the CDN out
// of reach. Nothing else is intercepted.
func serveOpenTokJS(body string) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		paused := make(chan fetch.RequestID, 16)
		if err := chromedp.Listen(ctx, func(ev any) {
			if e, ok := ev.(*fetch.EventRequestPaused); ok {
				paused <- e.RequestID
			}
		}); err != nil {
			return err
		}
		go func() {
			for {
				select {
				case <-ctx.Done():
					return
				case id := <-paused:
					if body == "" {
						_, _ = chromedp.Call(ctx, fetch.FailRequest, fetch.FailRequestParams{RequestID: id, ErrorReason: network.ErrorReasonConnectionRefused})
						continue
					}
					_, _ = chromedp.Call(ctx, fetch.FulfillRequest, fetch.FulfillRequestParams{
						RequestID: id, ResponseCode: 200, Body: []byte(body),
						ResponseHeaders: []*fetch.HeaderEntry{{Name: "Content-Type", Value: "text/javascript"}},
					})
				}
			}
		}()
		_, err := chromedp.Call(ctx, fetch.Enable, fetch.EnableParams{Patterns: []*fetch.RequestPattern{{URLPattern: "https://static.opentok.com/*"}}})
		return err
	}
}

// otCall is one call the double recorded.
type otCall struct {
	Fn        string `json:"fn"`
	APIKey    string `json:"apiKey"`
	SessionID string `json:"sessionId"`
	Token     string `json:"token"`
	Target    string `json:"target"`
	Stream    string `json:"stream"`
}

func (tb *tab) otCalls() []otCall {
	tb.t.Helper()
	var calls []otCall
	tb.eventually("read the OpenTok calls", func(ctx context.Context) error {
		raw, err := chromedp.Run(ctx, chromedp.Evaluate[string](`JSON.stringify(window.otCalls || [])`))
		if err != nil {
			return err
		}
		return json.Unmarshal([]byte(raw), &calls)
	})
	return calls
}

func fns(calls []otCall) []string {
	var out []string
	for _, c := range calls {
		out = append(out, c.Fn)
	}
	return out
}

func withOpenTok(t *testing.T, srv *opentoktest.Server) func(*allinone.Options) {
	return func(o *allinone.Options) {
		c, err := opentok.NewClient(opentok.Config{APIKey: otKey, APISecret: otSecret, APIURL: srv.URL})
		if err != nil {
			t.Fatal(err)
		}
		o.Tokens = tokens.Config{Provider: tokens.NewOpenTok(c)}
	}
}

// In OpenTok mode the page loads opentok.js only for a chat, joins the
// chat's session with the project key and its own party's token,
// publishes its camera, subscribes to the other party's stream when it
// appears, and disconnects when the chat ends. OpenTok's cloud and CDN are
// out of reach: the REST API is the local stand-in, and opentok.js a
// double of the OT global.
func TestPageOpenTokChat(t *testing.T) {
	srv := opentoktest.NewServer(otKey, otSecret)
	t.Cleanup(srv.Close)
	sys := startSystem(t, 2*time.Second, withOpenTok(t, srv))
	browser := newBrowser(t)
	url := sys.EdgeURLs[0]
	ann := openTab(t, browser, url, "Ann", serveOpenTokJS(fakeOT))
	ann.join()
	bob := openTab(t, browser, url, "Bob", serveOpenTokJS(fakeOT))
	bob.join()
	ann.until("the page names its video mode", `document.body.innerText.includes("OpenTok")`)
	ann.until("no opentok.js before a chat", `window.OT === undefined`)

	ann.click("button", "Invite Bob")
	bob.click("button", "Accept Ann")
	var session string
	for _, tb := range []*tab{ann, bob} {
		tb.one("button", "End chat")
		tb.until("the other party's stream is subscribed to", `(window.otCalls || []).some((c) => c.fn === "subscribe")`)
		tb.textOf("region", "Chat", "connected", has("Connected"))
		calls := tb.otCalls()
		want := []string{"initSession", "connect", "initPublisher", "publish", "subscribe"}
		if got := fns(calls); !slices.Equal(got, want) {
			t.Fatalf("%s: OpenTok calls %v, want %v", tb.name, got, want)
		}
		init, connect := calls[0], calls[1]
		if init.APIKey != otKey || init.SessionID == "" || (session != "" && init.SessionID != session) {
			t.Errorf("%s: initSession(%q, %q): want the project key and the chat's one session", tb.name, init.APIKey, init.SessionID)
		}
		session = init.SessionID
		t1, err := opentoktest.DecodeT1(connect.Token, otSecret)
		if err != nil {
			t.Fatalf("%s: the token does not verify: %v", tb.name, err)
		}
		if t1.Data.Get("session_id") != session || t1.Data.Get("role") != "publisher" ||
			!strings.Contains(t1.Data.Get("connection_data"), `"name":"`+tb.name+`"`) {
			t.Errorf("%s: connected with a token for %v, want a publisher of %s named %s", tb.name, t1.Data, session, tb.name)
		}
		if calls[2].Target != "opentok-local" || calls[4].Target != "opentok-remote" {
			t.Errorf("%s: published into %q, subscribed into %q", tb.name, calls[2].Target, calls[4].Target)
		}
	}
	if n := srv.Sessions(); n != 1 {
		t.Errorf("%d OpenTok sessions made for one chat", n)
	}

	// Mute and camera off stop publishing audio and video, and undo.
	ann.click(toggleRole, "Mute")
	ann.until("audio unpublished", `JSON.stringify(window.otCalls.at(-1)) === '{"fn":"publishAudio","on":false}'`)
	ann.pressed("Mute", true)
	ann.click(toggleRole, "Camera off")
	ann.until("video unpublished", `JSON.stringify(window.otCalls.at(-1)) === '{"fn":"publishVideo","on":false}'`)
	ann.click(toggleRole, "Mute")
	ann.until("audio published again", `JSON.stringify(window.otCalls.at(-1)) === '{"fn":"publishAudio","on":true}'`)
	ann.pressed("Mute", false)

	ann.click("button", "End chat")
	for _, tb := range []*tab{ann, bob} {
		tb.absent("button", "End chat")
		tb.until("the session is disconnected", `window.otCalls.at(-1).fn === "disconnect"`)
	}
}

// When opentok.js cannot be loaded (OpenTok's CDN out of reach, or
// blocked), the page says so in the chat instead of failing silently; the
// chat itself stands, and ends as any other.
func TestPageOpenTokLibraryFailsToLoad(t *testing.T) {
	srv := opentoktest.NewServer(otKey, otSecret)
	t.Cleanup(srv.Close)
	sys := startSystem(t, 2*time.Second, withOpenTok(t, srv))
	browser := newBrowser(t)
	url := sys.EdgeURLs[0]
	ann := openTab(t, browser, url, "Ann", serveOpenTokJS(""))
	ann.join()
	bob := openTab(t, browser, url, "Bob", serveOpenTokJS(""))
	bob.join()
	ann.click("button", "Invite Bob")
	bob.click("button", "Accept Ann")
	for _, tb := range []*tab{ann, bob} {
		tb.textOf("region", "Chat", "the library's failure", has("opentok.js", "could not be loaded"))
	}
	bob.click("button", "End chat")
	ann.absent("button", "End chat")
}
