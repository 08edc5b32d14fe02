// Package cluster holds the multi-process fault tests of BuddyTok: they
// build the real binaries, start a 3-node NATS cluster (nats-server built
// from the pinned module), two replicas of every service and three edges
// as processes of their own, play simulated users over the real WebSocket
// protocol, and inject the faults operators meet (SIGKILL, SIGSTOP, a NATS
// node dying, a rolling restart of NATS, a network partition). Everything
// runs on loopback and ends with the test. See docs/resilience.md.
package cluster
