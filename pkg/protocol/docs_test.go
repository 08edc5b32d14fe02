package protocol_test

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/buddytok/buddytok/pkg/protocol"
)

// docTable returns the rows of the Markdown table under heading in
// docs/protocol.md, by the type in their first column: the row's other
// columns.
func docTable(t *testing.T, heading string) map[string][]string {
	t.Helper()
	doc, err := os.ReadFile("../../docs/protocol.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(doc), "\n"+heading+"\n")
	if !ok {
		t.Fatalf("docs/protocol.md has no %q", heading)
	}
	rows := map[string][]string{}
	row := regexp.MustCompile("^\\| `([a-z_]+)` \\|(.*)\\|$")
	for _, line := range strings.Split(section, "\n")[1:] {
		if strings.HasPrefix(line, "#") {
			break
		}
		if m := row.FindStringSubmatch(line); m != nil {
			rows[m[1]] = strings.Split(m[2], "|")
		}
	}
	return rows
}

// docs/protocol.md lists every client frame with its fields, and no frame
// that does not exist; and every server frame type.
func TestDocsListEveryFrame(t *testing.T) {
	t.Parallel()
	client := docTable(t, "### Client → server")
	for _, k := range protocol.ClientFrames {
		row, ok := client[k.Type]
		if !ok {
			t.Errorf("docs/protocol.md does not list the client frame %q", k.Type)
			continue
		}
		for _, f := range k.Fields {
			if !strings.Contains(row[0], "`"+f+"`") {
				t.Errorf("docs/protocol.md: the %q frame's fields %q do not name %q", k.Type, row[0], f)
			}
		}
	}
	for typ := range client {
		if _, ok := protocol.ClientFrameKindOf(typ); !ok {
			t.Errorf("docs/protocol.md lists a client frame %q that does not exist", typ)
		}
	}
	server := docTable(t, "### Server → client")
	for _, typ := range protocol.ServerFrameTypes {
		if _, ok := server[typ]; !ok {
			t.Errorf("docs/protocol.md does not list the server frame %q", typ)
		}
	}
	for typ := range server {
		if !slices.Contains(protocol.ServerFrameTypes, typ) {
			t.Errorf("docs/protocol.md lists a server frame %q that does not exist", typ)
		}
	}
}
