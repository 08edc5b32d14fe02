package browser_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// toggleRole is the accessibility role of a button with aria-pressed.
const toggleRole = "button"

// pressed waits until the toggle button named name is pressed or not.
func (tb *tab) pressed(name string, want bool) {
	tb.t.Helper()
	tb.eventually(fmt.Sprintf("%q pressed %t", name, want), func(ctx context.Context) error {
		ids, err := chromedp.Run(ctx, find(toggleRole, name))
		if err != nil || len(ids) != 1 {
			return fmt.Errorf("%d matches (%v): %w", len(ids), err, errNotYet)
		}
		raw, err := chromedp.Run(ctx, call(ids[0], `function() { return this.getAttribute("aria-pressed"); }`))
		if err != nil {
			return err
		}
		var got string
		if err := json.Unmarshal(raw, &got); err != nil {
			return err
		}
		if got != fmt.Sprint(want) {
			return fmt.Errorf("aria-pressed %s: %w", got, errNotYet)
		}
		return nil
	})
}

// refuseCamera makes the tab's browser refuse the camera, as a person who
// answers "Block" would, and leave the microphone.
var refuseCamera = beforeLoad(`
	const ask = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
	navigator.mediaDevices.getUserMedia = async (constraints) => {
		if (constraints.video) throw new DOMException("Permission denied", "NotAllowedError");
		return ask(constraints);
	};`)

// A person who refuses the camera is still in the chat: the page says
// what happened, sends the microphone alone, and shows the other side's
// video; the other side hears them. Mute and Camera off switch what a page
// sends, and say so.
func TestPageCameraRefusedAndToggles(t *testing.T) {
	sys := startSystem(t, 2*time.Second)
	browser := newBrowser(t)
	url := sys.EdgeURLs[0]
	ann := openTab(t, browser, url, "Ann", refuseCamera)
	ann.join()
	bob := openTab(t, browser, url, "Bob")
	bob.join()
	ann.click("button", "Invite Bob")
	bob.click("button", "Accept Ann")

	ann.textOf("region", "Chat", "the refusal explained", has("camera was refused", "hears you"))
	ann.until("Bob's video plays for Ann",
		`(() => { const v = document.getElementById("remote-video"); return !!v.srcObject && v.videoWidth > 0; })()`)
	bob.until("Bob receives Ann's sound",
		`(() => { const v = document.getElementById("remote-video"); return !!v.srcObject && v.srcObject.getAudioTracks().length > 0; })()`)
	ann.until("Ann cannot turn off a camera she does not send", `document.getElementById("camera-off").disabled`)

	ann.click(toggleRole, "Mute")
	ann.pressed("Mute", true)
	ann.until("Ann's microphone is off", `!document.getElementById("local-video").srcObject.getAudioTracks()[0].enabled`)
	ann.click(toggleRole, "Mute")
	ann.pressed("Mute", false)
	ann.until("Ann's microphone is on again", `document.getElementById("local-video").srcObject.getAudioTracks()[0].enabled`)

	bob.click(toggleRole, "Camera off")
	bob.pressed("Camera off", true)
	bob.until("Bob's camera is off", `!document.getElementById("local-video").srcObject.getVideoTracks()[0].enabled`)

	bob.click("button", "End chat")
	for _, tb := range []*tab{ann, bob} {
		tb.absent("button", "End chat")
		tb.until("the toggles are off again", `document.getElementById("mute").disabled && document.getElementById("mute").getAttribute("aria-pressed") === "false"`)
	}
}
