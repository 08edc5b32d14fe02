// Package embeddednats runs a NATS server with JetStream inside the calling
// process: the all-in-one binary uses it so nobody needs a broker to try
// BuddyTok, and tests use it so they run against real NATS in milliseconds.
package embeddednats

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/buddytok/buddytok/pkg/permissions"
)

// Options configure the embedded server. The zero value listens on a random
// loopback port and keeps JetStream data in a fresh temporary directory.
type Options struct {
	Host string // default 127.0.0.1
	Port int    // 0 picks a random free port
	// StoreDir is where JetStream keeps its files. Empty: a temporary
	// directory, removed on Shutdown, in memory (tmpfs) when the machine
	// has room there (see tempParent).
	StoreDir string
	// Users, if any, are the only clients the server accepts, each with
	// its permissions (package permissions).
	Users []*server.User
}

// Server is a running embedded NATS server.
type Server struct {
	ns      *server.Server
	tempDir string
}

// Start starts the server and waits until it accepts connections.
func Start(opts Options) (*Server, error) {
	host := opts.Host
	if host == "" {
		host = "127.0.0.1"
	}
	port := opts.Port
	if port == 0 {
		port = server.RANDOM_PORT
	}
	s := &Server{}
	dir := opts.StoreDir
	if dir != "" {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("embeddednats: store dir: %w", err)
		}
	}
	if dir == "" {
		parent := tempParent()
		tmp, err := os.MkdirTemp(parent, "buddytok-nats-*")
		if err != nil && parent != "" {
			tmp, err = os.MkdirTemp("", "buddytok-nats-*")
		}
		if err != nil {
			return nil, fmt.Errorf("embeddednats: store dir: %w", err)
		}
		dir, s.tempDir = tmp, tmp
	}
	ns, err := server.NewServer(&server.Options{
		ServerName: "buddytok-embedded",
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   dir,
		NoSigs:     true,
		NoLog:      true,
		Users:      opts.Users,
	})
	if err != nil {
		s.removeTemp()
		return nil, fmt.Errorf("embeddednats: configure: %w", err)
	}
	s.ns = ns
	ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		return nil, errors.New("embeddednats: server not ready after 10s (is the port in use?)")
	}
	return s, nil
}

// ClientURL is the nats:// URL clients connect to.
func (s *Server) ClientURL() string { return s.ns.ClientURL() }

// Shutdown stops the server and removes a temporary store directory.
func (s *Server) Shutdown() {
	if s.ns != nil {
		s.ns.Shutdown()
		s.ns.WaitForShutdown()
	}
	s.removeTemp()
}

func (s *Server) removeTemp() {
	if s.tempDir != "" {
		_ = os.RemoveAll(s.tempDir)
	}
}

// RoleUsers are the users of an embedded NATS server as BuddyTok runs it: admin with every
// permission, and each role's user with the role's, with the passwords pw
// names (by user).
func RoleUsers(pw map[string]string, admin string) []*server.User {
	users := []*server.User{{Username: admin, Password: pw[admin]}}
	for _, r := range permissions.Roles {
		set := permissions.For(r)
		p := &server.Permissions{
			Publish:   &server.SubjectPermission{Allow: set.Publish},
			Subscribe: &server.SubjectPermission{Allow: set.Subscribe},
		}
		if set.Responds {
			p.Response = &server.ResponsePermission{MaxMsgs: 1}
		}
		users = append(users, &server.User{Username: string(r), Password: pw[string(r)], Permissions: p})
	}
	return users
}
