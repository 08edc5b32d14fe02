package allinone

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/buddytok/buddytok/pkg/permissions"
)

// Admin is the embedded server's user with every permission: for an
// operator's tools (nats micro ls) and for tests that read the state.
const Admin = "admin"

// userNames are the embedded server's users: one per role, and Admin.
func userNames() []string {
	names := []string{Admin}
	for _, r := range permissions.Roles {
		names = append(names, string(r))
	}
	return names
}

// UsersDir is where an all-in-one keeps the passwords of its embedded
// server's users, one file per user (readable by its owner only), so that
// replicas started apart can connect: NATS_USER=edge NATS_PASSWORD=$(cat DIR/edge).
func UsersDir(storeDir string) string { return filepath.Join(storeDir, "users") }

// passwords returns each user's password: read from dir, or made and
// written there on the first start (permissions.KeepPassword); with no
// dir, made for this process only.
func passwords(dir string) (map[string]string, error) {
	pw := map[string]string{}
	if dir != "" {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("allinone: NATS users: %w", err)
		}
	}
	for _, name := range userNames() {
		if dir == "" {
			pw[name] = permissions.NewPassword()
			continue
		}
		p, err := permissions.KeepPassword(filepath.Join(dir, name), -1)
		if err != nil {
			return nil, fmt.Errorf("allinone: %w", err)
		}
		pw[name] = p
	}
	return pw, nil
}
