package permissions_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/buddytok/buddytok/pkg/permissions"
	"github.com/buddytok/buddytok/pkg/protocol"
)

// Provision makes a password per role and the users nats-server reads, as
// bcrypt hashes; each role connects with its password, with its
// permissions; running it again keeps the passwords.
func TestProvision(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := permissions.Provision(dir, -1); err != nil {
		t.Fatal(err)
	}
	read := func(parts ...string) string {
		t.Helper()
		path := filepath.Join(append([]string{dir}, parts...)...)
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(data))
	}
	passwords := map[string]string{"admin": read(permissions.ServerDir, permissions.AdminPasswordFile)}
	for _, r := range permissions.Roles {
		path := filepath.Join(dir, string(r), permissions.PasswordFile)
		if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o400 {
			t.Fatalf("%s: %v, mode %v; want 0400", path, err, fi.Mode())
		}
		passwords[string(r)] = read(string(r), permissions.PasswordFile)
		if len(passwords[string(r)]) != 64 {
			t.Fatalf("%s's password %d characters", r, len(passwords[string(r)]))
		}
	}
	users := read(permissions.ServerDir, permissions.UsersFile)
	for name, pw := range passwords {
		if strings.Contains(users, pw) {
			t.Errorf("users.conf holds %s's password itself, not its hash", name)
		}
	}

	// The way docker-compose.yml's NATS reads it: included by its
	// configuration, from a directory beside it.
	conf := filepath.Join(dir, "server.conf")
	if err := os.WriteFile(conf, []byte("port: -1\ninclude \""+permissions.ServerDir+"/"+permissions.UsersFile+"\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(conf)
	if err != nil {
		t.Fatalf("nats-server refuses it: %v", err)
	}
	opts.NoLog, opts.NoSigs = true, true
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	t.Cleanup(s.Shutdown)
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server did not start")
	}
	for name, pw := range passwords {
		nc, err := nats.Connect(s.ClientURL(), nats.UserInfo(name, pw))
		if err != nil {
			t.Fatalf("%s connects: %v", name, err)
		}
		nc.Close()
	}
	if nc, err := nats.Connect(s.ClientURL(), nats.UserInfo("edge", passwords["presence"])); err == nil {
		nc.Close()
		t.Fatal("the edge connected with presence's password")
	}
	edge, err := nats.Connect(s.ClientURL(), nats.UserInfo("edge", passwords["edge"]))
	if err != nil {
		t.Fatal(err)
	}
	defer edge.Close()
	denied := make(chan error, 1)
	edge.SetErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		select {
		case denied <- err:
		default:
		}
	})
	if err := edge.Publish(protocol.EventSubject(protocol.Lobby, protocol.NewID()), []byte("{}")); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-denied:
		if !strings.Contains(err.Error(), "Permissions Violation") {
			t.Fatalf("publishing an event as the edge: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the edge published an event: its permissions are not applied")
	}

	// Again: the same passwords.
	if err := permissions.Provision(dir, -1); err != nil {
		t.Fatal(err)
	}
	for _, r := range permissions.Roles {
		if got := read(string(r), permissions.PasswordFile); got != passwords[string(r)] {
			t.Errorf("%s's password changed on the second run", r)
		}
	}
}

// A password file an operator shortened by hand is refused, not replaced
// behind the services' backs.
func TestProvisionRefusesAShortPassword(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "edge"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "edge", permissions.PasswordFile), []byte("hunter2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	err := permissions.Provision(dir, -1)
	if err == nil || !strings.Contains(err.Error(), "shorter") {
		t.Fatalf("%v, want a refusal of the short password", err)
	}
}
