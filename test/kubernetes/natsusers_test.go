package kubernetes

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/buddytok/buddytok/pkg/permissions"
)

var update = flag.Bool("update", false, "write deploy/kubernetes/nats/values-auth.yaml from pkg/permissions")

// natsSecret is the Secret that holds every NATS password: a key per role,
// and admin.
const natsSecret = "buddytok-nats"

// The NATS users of the Kubernetes setup are the roles of pkg/permissions,
// each with exactly its permissions: values-auth.yaml is written from them
// (go test ./test/kubernetes -run TestNATSUsersValues -update).
func TestNATSUsersValues(t *testing.T) {
	t.Parallel()
	want := natsUsersValues()
	path := filepath.Join(deployDir, "nats", "values-auth.yaml")
	if *update {
		if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Fatalf("%s is not what pkg/permissions says; run go test ./test/kubernetes -run TestNATSUsersValues -update\nwant:\n%s", path, want)
	}
}

// passwordVar is the NATS container's variable that holds user's password.
func passwordVar(user string) string { return "NATS_" + strings.ToUpper(user) + "_PASSWORD" }

func natsUsersValues() string {
	var b strings.Builder
	b.WriteString(`# NATS users for BuddyTok, for the official NATS Helm chart beside values.yaml
# or values-cluster.yaml: one user per role, allowed its own subjects only
# (pkg/permissions), and an admin for operators' tools. The passwords come
# from the Secret ` + natsSecret + ` (docs/operations.md, Kubernetes):
#   helm install nats nats/nats -f deploy/kubernetes/nats/values.yaml \
#     -f deploy/kubernetes/nats/values-auth.yaml
# Written from pkg/permissions by
#   go test ./test/kubernetes -run TestNATSUsersValues -update
# do not edit it by hand.
config:
  merge:
    authorization:
      users:
`)
	fmt.Fprintf(&b, "        - user: admin\n          password: << $%s >>\n", passwordVar("admin"))
	for _, r := range permissions.Roles {
		s := permissions.For(r)
		fmt.Fprintf(&b, "        - user: %s\n          password: << $%s >>\n          permissions:\n", r, passwordVar(string(r)))
		for _, l := range []struct {
			name     string
			subjects []string
		}{{"publish", s.Publish}, {"subscribe", s.Subscribe}} {
			fmt.Fprintf(&b, "            %s:\n              allow:\n", l.name)
			for _, subj := range l.subjects {
				fmt.Fprintf(&b, "                - %q\n", subj)
			}
		}
		if s.Responds {
			b.WriteString("            allow_responses: true\n")
		}
	}
	b.WriteString("container:\n  env:\n")
	for _, user := range append([]string{"admin"}, roleNames()...) {
		fmt.Fprintf(&b, "    %s:\n      valueFrom:\n        secretKeyRef:\n          name: %s\n          key: %s\n", passwordVar(user), natsSecret, user)
	}
	return b.String()
}

func roleNames() []string {
	var names []string
	for _, r := range permissions.Roles {
		names = append(names, string(r))
	}
	return names
}

// checkNATSUser checks that a container of component connects as the
// component's NATS user, with the password from its own key of the
// Secret.
func checkNATSUser(t *testing.T, component string, pod corev1.PodSpec, c corev1.Container) {
	t.Helper()
	var user, passwordFile string
	for _, e := range c.Env {
		switch e.Name {
		case "NATS_USER":
			user = e.Value
		case "NATS_PASSWORD":
			t.Errorf("%s/%s: NATS_PASSWORD in the environment; the password is mounted as a file (NATS_PASSWORD_FILE)", component, c.Name)
		case "NATS_PASSWORD_FILE":
			passwordFile = e.Value
		}
	}
	if user != component {
		t.Errorf("%s/%s: NATS_USER %q, want %s", component, c.Name, user, component)
	}
	// The file is in a volume mounted read-only from the Secret, holding
	// this role's key alone.
	for _, m := range c.VolumeMounts {
		rel, ok := strings.CutPrefix(passwordFile, m.MountPath+"/")
		if !ok {
			continue
		}
		for _, v := range pod.Volumes {
			if v.Name != m.Name || v.Secret == nil {
				continue
			}
			if v.Secret.SecretName == natsSecret && len(v.Secret.Items) == 1 && v.Secret.Items[0].Key == component && v.Secret.Items[0].Path == rel && m.ReadOnly {
				return
			}
		}
	}
	t.Errorf("%s/%s: NATS_PASSWORD_FILE %q is not its key of the Secret %s, mounted read-only", component, c.Name, passwordFile, natsSecret)
}
