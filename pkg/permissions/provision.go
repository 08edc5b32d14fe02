package permissions

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/crypto/bcrypt"
)

// The files Provision writes, under its directory.
const (
	// ServerDir holds what nats-server reads: UsersFile, included by its
	// configuration, and AdminPasswordFile, for operators' tools.
	ServerDir         = "nats"
	UsersFile         = "users.conf"
	AdminPasswordFile = "admin.password"
	// PasswordFile is a role's password, in the role's own directory
	// (ROLE/password), which only that role's containers mount.
	PasswordFile = "password"
)

// minPassword is the shortest password Provision keeps from an earlier run.
const minPassword = 32

// Provision makes the NATS users of a deployment that is given no
// passwords (docker-compose.yml's nats-users): a random password for each
// role in dir/ROLE/password, and for nats-server dir/nats/users.conf (the
// authorization block of Config, with the passwords as bcrypt hashes) and
// dir/nats/admin.password. Passwords from an earlier run are kept, so
// running it at every start changes only what a new version changed in
// the permissions. owner, if not negative, is the user and group that get
// the roles' directories and files (the services run as 65532); each is
// readable by its owner only.
func Provision(dir string, owner int) error {
	hashes := map[Role]string{}
	for _, r := range Roles {
		pw, err := password(filepath.Join(dir, string(r)), PasswordFile, owner)
		if err != nil {
			return err
		}
		if hashes[r], err = hash(pw); err != nil {
			return err
		}
	}
	server := filepath.Join(dir, ServerDir)
	admin, err := password(server, AdminPasswordFile, -1)
	if err != nil {
		return err
	}
	adminHash, err := hash(admin)
	if err != nil {
		return err
	}
	conf := "# Written by `nats-users` (pkg/permissions); rewritten at every start.\n" + Config(hashes, adminHash)
	// Only hashes: readable by whichever user nats-server runs as.
	return writeFile(filepath.Join(server, UsersFile), []byte(conf), 0o444, -1)
}

// password returns the password in dir/name (KeepPassword), making dir
// first, given to owner if not negative.
func password(dir, name string, owner int) (string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("nats users: %w", err)
	}
	if owner >= 0 {
		if err := os.Chown(dir, owner, owner); err != nil {
			return "", fmt.Errorf("nats users: %w", err)
		}
	}
	return KeepPassword(filepath.Join(dir, name), owner)
}

// NewPassword is a random password: 64 hexadecimal digits.
func NewPassword() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return hex.EncodeToString(b)
}

// KeepPassword returns the password in the file at path, made
// (NewPassword) and written there first if there is none, readable by its
// owner only (owner, if not negative). A file that holds a password
// shorter than 32 characters is refused, not replaced behind the backs of
// those who read it.
func KeepPassword(path string, owner int) (string, error) {
	data, err := os.ReadFile(path)
	switch {
	case err == nil:
		pw := strings.TrimSpace(string(data))
		if len(pw) < minPassword {
			return "", fmt.Errorf("nats users: %s holds a password shorter than %d characters: remove it to have a new one made", path, minPassword)
		}
		return pw, nil
	case !errors.Is(err, fs.ErrNotExist):
		return "", fmt.Errorf("nats users: %w", err)
	}
	pw := NewPassword()
	return pw, writeFile(path, []byte(pw+"\n"), 0o400, owner)
}

// hash is pw's bcrypt hash, quoted for a nats-server configuration.
func hash(pw string) (string, error) {
	h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.DefaultCost)
	if err != nil {
		return "", fmt.Errorf("nats users: %w", err)
	}
	return fmt.Sprintf("%q", h), nil
}

// writeFile replaces path with data atomically: a reader sees the old file
// or the new one, never a part.
func writeFile(path string, data []byte, mode fs.FileMode, owner int) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return fmt.Errorf("nats users: %w", err)
	}
	defer func() { _ = os.Remove(tmp.Name()) }()
	if _, err := tmp.Write(data); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("nats users: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("nats users: %w", err)
	}
	if err := os.Chmod(tmp.Name(), mode); err != nil {
		return fmt.Errorf("nats users: %w", err)
	}
	if owner >= 0 {
		if err := os.Chown(tmp.Name(), owner, owner); err != nil {
			return fmt.Errorf("nats users: %w", err)
		}
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("nats users: %w", err)
	}
	return nil
}
