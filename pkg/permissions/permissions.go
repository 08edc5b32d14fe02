// Package permissions says, for each BuddyTok role (edge, presence,
// invites, tokens), which NATS subjects its connections may publish and
// subscribe to: what the role itself does, and nothing more. A NATS server
// given these permissions (per-role users; the nats-server configuration
// Config writes, or server.Options built from Users) stops a leaked or
// compromised credential of one role from doing another's work: an edge's
// cannot write the state or another edge's lease, publish anyone's events,
// remove users, make video sessions, or answer requests in a service's
// place.
package permissions

import (
	"fmt"
	"sort"
	"strings"

	"github.com/buddytok/buddytok/pkg/protocol"
	"github.com/buddytok/buddytok/pkg/state"
)

// Role is what a process of BuddyTok does, and the NATS user it connects as.
type Role string

// The roles.
const (
	Edge     Role = "edge"
	Presence Role = "presence"
	Invites  Role = "invites"
	Tokens   Role = "tokens"
)

// Roles are every role, in a fixed order.
var Roles = []Role{Edge, Presence, Invites, Tokens}

// InboxPrefix is the prefix of the role's reply subjects (nats.CustomInboxPrefix):
// a role subscribes to its own replies only, so no other role can read
// them.
func InboxPrefix(r Role) string { return "_INBOX_" + string(r) }

// Set is a role's permissions.
type Set struct {
	Publish   []string
	Subscribe []string
	// Responds: the role answers requests (micro services), so it may
	// publish once to the reply subject of a request it received.
	Responds bool
}

// For returns the permissions of role r.
func For(r Role) Set {
	stateStream, leaseStream := "KV_"+state.Bucket, "KV_"+state.LeaseBucket
	// Reading a bucket: its stream's info and messages, and watching it
	// through ordered consumers (with their flow control).
	read := func(stream string) []string {
		return []string{
			"$JS.API.INFO",
			"$JS.API.STREAM.INFO." + stream,
			"$JS.API.STREAM.MSG.GET." + stream,
			"$JS.API.DIRECT.GET." + stream + ".>",
			"$JS.API.CONSUMER.CREATE." + stream + ".>",
			"$JS.API.CONSUMER.DELETE." + stream + ".>",
			"$JS.API.CONSUMER.INFO." + stream + ".>",
			"$JS.FC.>",
		}
	}
	// Any role may create the buckets, with the one configuration every
	// role asks for: whichever starts first.
	create := []string{"$JS.API.STREAM.CREATE." + stateStream, "$JS.API.STREAM.CREATE." + leaseStream}
	write := func(bucket string) string { return "$KV." + bucket + ".>" }
	services := "$SRV.>" // micro: nats micro ls, info, stats
	var s Set
	switch r {
	case Edge:
		s.Publish = join(read(stateStream), read(leaseStream), create,
			[]string{
				// Not the lease bucket: presence writes an edge's lease,
				// under the ID its secret names (LeaseRequest).
				protocol.SubjectPresenceJoin, protocol.SubjectPresenceResume,
				protocol.SubjectPresenceDisconnect, protocol.SubjectPresenceAttach, protocol.SubjectPresenceLease,
				protocol.SubjectInvitesInvite, protocol.SubjectInvitesCancel, protocol.SubjectInvitesAccept,
				protocol.SubjectInvitesDecline, protocol.SubjectInvitesEnd,
				protocol.SubjectTokensCredentials, protocol.SubjectTokensSignal, protocol.SubjectTokensMode,
			})
		s.Subscribe = []string{
			protocol.EventSubject("*", "*"),
			state.RepublishAll,         // its users' rooms' changes
			state.LeaderElectedSubject, // when a change may not have been republished
		}
	case Presence:
		s.Publish = join(read(stateStream), read(leaseStream), create,
			[]string{
				"$JS.API.STREAM.UPDATE." + stateStream, // enabling atomic batches on an older deployment
				"$JS.API.STREAM.PURGE." + stateStream,  // removing the markers of records deleted long ago (Store.PurgeDeleted)
				write(state.Bucket), write(state.LeaseBucket),
				protocol.SubjectInvitesLeave,
				protocol.EventSubject("*", "*"), // superseded connections
			})
		s.Subscribe = []string{services, "buddytok.presence.>"}
		s.Responds = true
	case Invites:
		s.Publish = join(read(stateStream), create,
			[]string{
				"$JS.API.STREAM.UPDATE." + stateStream,
				write(state.Bucket),
				protocol.SubjectTokensSession,
				protocol.EventSubject("*", "*"),
			})
		s.Subscribe = []string{services, "buddytok.invites.>"}
		s.Responds = true
	case Tokens:
		s.Publish = join(read(stateStream), create,
			[]string{
				"$JS.API.STREAM.UPDATE." + stateStream,
				protocol.EventSubject("*", "*"), // WebRTC signals
			})
		s.Subscribe = []string{services, "buddytok.tokens.>"}
		s.Responds = true
	default:
		panic(fmt.Sprintf("permissions: unknown role %q", r))
	}
	s.Subscribe = append(s.Subscribe, InboxPrefix(r)+".>")
	return s
}

func join(lists ...[]string) []string {
	seen := map[string]bool{}
	var out []string
	for _, l := range lists {
		for _, s := range l {
			if !seen[s] {
				seen[s] = true
				out = append(out, s)
			}
		}
	}
	sort.Strings(out)
	return out
}

// Config is the authorization block of a nats-server configuration file
// with one user per role, each with its password from passwords (quoted,
// or a variable reference like $EDGE_PASSWORD) and its permissions, and,
// if admin is not empty, a user "admin" with that password and every
// permission, for operators' tools.
func Config(passwords map[Role]string, admin string) string {
	var b strings.Builder
	b.WriteString("authorization {\n  users = [\n")
	if admin != "" {
		fmt.Fprintf(&b, "    {user: \"admin\", password: %s}\n", admin)
	}
	for _, r := range Roles {
		s := For(r)
		fmt.Fprintf(&b, "    {user: %q, password: %s, permissions: {\n", string(r), passwords[r])
		fmt.Fprintf(&b, "      publish: {allow: %s}\n", list(s.Publish))
		fmt.Fprintf(&b, "      subscribe: {allow: %s}\n", list(s.Subscribe))
		if s.Responds {
			b.WriteString("      allow_responses: true\n")
		}
		b.WriteString("    }}\n")
	}
	b.WriteString("  ]\n}\n")
	return b.String()
}

func list(subjects []string) string {
	q := make([]string, len(subjects))
	for i, s := range subjects {
		q[i] = fmt.Sprintf("%q", s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// NewPasswords makes a password for each role's user and for admin.
func NewPasswords(admin string) map[string]string {
	pw := map[string]string{admin: NewPassword()}
	for _, r := range Roles {
		pw[string(r)] = NewPassword()
	}
	return pw
}
