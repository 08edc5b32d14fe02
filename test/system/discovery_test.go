package system_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/buddytok/buddytok/test/kit"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
)

// `nats micro ls` finds the services by pinging $SRV.PING; so does this test.
func TestServicesAreDiscoverable(t *testing.T) {
	t.Parallel()
	w := kit.Start(t, replicated, kit.Settings{Grace: time.Second})
	nc, err := w.Sys.Connect("test-discovery")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	subject, err := micro.ControlSubject(micro.PingVerb, "", "")
	if err != nil {
		t.Fatal(err)
	}
	inbox := nats.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.PublishRequest(subject, inbox, nil); err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for {
		msg, err := sub.NextMsg(time.Second) // replies stop coming: all replicas answered
		if err != nil {
			break
		}
		var ping micro.Ping
		if err := json.Unmarshal(msg.Data, &ping); err != nil {
			t.Fatal(err)
		}
		seen[ping.Name]++
	}
	for _, name := range []string{"presence", "invites", "tokens"} {
		if seen[name] != 2 {
			t.Errorf("%s: %d replicas answered the ping, want 2 (all: %v)", name, seen[name], seen)
		}
	}
	if len(seen) != 3 {
		t.Errorf("services answering: %v, want exactly presence, invites, tokens", seen)
	}
}
