//go:build !unix

package admission

// openFileLimit is the process's limit on open files: none this package
// can read here.
func openFileLimit() int { return 1 << 20 }
