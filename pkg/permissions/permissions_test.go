package permissions_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/buddytok/buddytok/pkg/permissions"
	"github.com/buddytok/buddytok/pkg/protocol"
)

// Config writes what nats-server reads back as the same users and
// permissions.
func TestConfigIsWhatTheServerReads(t *testing.T) {
	t.Parallel()
	pw := map[permissions.Role]string{}
	for _, r := range permissions.Roles {
		pw[r] = `"pw-` + string(r) + `"`
	}
	conf := filepath.Join(t.TempDir(), "nats.conf")
	if err := os.WriteFile(conf, []byte(permissions.Config(pw, `"pw-admin"`)), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(conf)
	if err != nil {
		t.Fatalf("nats-server refuses the configuration: %v\n%s", err, permissions.Config(pw, `"pw-admin"`))
	}
	if len(opts.Users) != len(permissions.Roles)+1 {
		t.Fatalf("%d users, want %d", len(opts.Users), len(permissions.Roles)+1)
	}
	for _, u := range opts.Users {
		if u.Username == "admin" {
			if u.Password != "pw-admin" || u.Permissions != nil {
				t.Errorf("admin read back as %+v", u)
			}
			continue
		}
		want := permissions.For(permissions.Role(u.Username))
		if u.Password != "pw-"+u.Username || !slices.Equal(u.Permissions.Publish.Allow, want.Publish) ||
			!slices.Equal(u.Permissions.Subscribe.Allow, want.Subscribe) || (u.Permissions.Response != nil) != want.Responds {
			t.Errorf("user %s read back as %+v", u.Username, u.Permissions)
		}
	}
}

// What each role may do, at a glance: the edge serves no subjects and
// writes nothing but its lease; only presence removes users; only invites
// asks for video sessions; every role has its own replies.
func TestRolesStayInTheirLanes(t *testing.T) {
	t.Parallel()
	edge := permissions.For(permissions.Edge)
	for _, s := range edge.Publish {
		if strings.HasPrefix(s, "$KV.buddytok.") || strings.HasPrefix(s, "buddytok.events") ||
			s == protocol.SubjectInvitesLeave || s == protocol.SubjectTokensSession || strings.Contains(s, "STREAM.UPDATE") {
			t.Errorf("the edge may publish to %s", s)
		}
	}
	if edge.Responds {
		t.Error("the edge may answer requests")
	}
	for _, r := range permissions.Roles {
		set := permissions.For(r)
		for _, s := range set.Subscribe {
			if strings.HasPrefix(s, "_INBOX") && s != permissions.InboxPrefix(r)+".>" {
				t.Errorf("%s may read the replies of %s", r, s)
			}
		}
		leaves := slices.Contains(set.Publish, protocol.SubjectInvitesLeave)
		sessions := slices.Contains(set.Publish, protocol.SubjectTokensSession)
		if leaves != (r == permissions.Presence) || sessions != (r == permissions.Invites) {
			t.Errorf("%s: removes users %t, asks for sessions %t", r, leaves, sessions)
		}
	}
}
