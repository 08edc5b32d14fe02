//go:build !linux

package embeddednats

// tempParent is "" (os.TempDir) where no tmpfs is known (see the Linux one).
func tempParent() string { return "" }
