package edge

import (
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// The edge's packages import one another one way only: edge wires session,
// which uses fanout and admission (and identity); none of those knows a
// package above it.
func TestPackagesImportDownwardOnly(t *testing.T) {
	t.Parallel()
	const prefix = "github.com/buddytok/buddytok/services/edge/"
	// Each package, with the edge packages it may import.
	allowed := map[string][]string{
		"edge":      {"session", "fanout", "admission", "identity"},
		"session":   {"fanout", "admission", "identity"},
		"fanout":    nil,
		"admission": nil,
		"identity":  nil,
	}
	for pkg, may := range allowed {
		dir := filepath.Join("..", pkg)
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if !strings.HasSuffix(e.Name(), ".go") || strings.HasSuffix(e.Name(), "_test.go") {
				continue
			}
			f, err := parser.ParseFile(token.NewFileSet(), filepath.Join(dir, e.Name()), nil, parser.ImportsOnly)
			if err != nil {
				t.Fatal(err)
			}
			for _, imp := range f.Imports {
				path, _ := strconv.Unquote(imp.Path.Value)
				name, ok := strings.CutPrefix(path, prefix)
				if !ok {
					continue
				}
				if !slices.Contains(may, name) {
					t.Errorf("%s/%s imports %s, which it may not: the arrows go edge → session → fanout, admission", pkg, e.Name(), name)
				}
			}
		}
	}
}
