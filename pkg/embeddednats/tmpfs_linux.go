package embeddednats

import "syscall"

// tmpfsRoom is how much free space a tmpfs needs before a temporary store
// goes there: a store of a few test users or a trial run needs megabytes,
// and a container's small default /dev/shm (64 MiB) is left alone.
const tmpfsRoom = 1 << 30

// tempParent is where a temporary store is made: /dev/shm when it has
// tmpfsRoom free, else "" (os.TempDir). Nothing in a temporary store
// outlives the process, so it gains nothing from a disk, and a disk costs
// every commit dearly: nats-server stages each atomic batch of a
// one-replica file stream in a store of its own that it syncs, which took
// about 6.7 ms a commit on a CI machine's disk against 0.4 ms on tmpfs
// (BenchmarkCommit/keys=2 in pkg/state), and far longer on a busy disk.
func tempParent() string {
	var st syscall.Statfs_t
	if err := syscall.Statfs("/dev/shm", &st); err != nil || uint64(st.Bavail)*uint64(st.Bsize) < tmpfsRoom {
		return ""
	}
	return "/dev/shm"
}
