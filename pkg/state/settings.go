package state

import (
	"time"

	"github.com/buddytok/buddytok/pkg/config"
)

// The settings every process that opens the buckets shares: chosen when a
// deployment's buckets are made, and refused at start when a process is set
// to another value than the buckets carry.
var (
	// ReplicasSetting is KV_REPLICAS (Options.Replicas).
	ReplicasSetting = config.Int("KV_REPLICAS", 0, 1, 5, "all",
		"JetStream replicas of the buckets (3 on a NATS cluster). Shared: chosen when the buckets are made; a process set to another value refuses to start",
		config.DefaultShown("the deployment's (`1` when new)"))
	// LeaseTTLSetting is EDGE_LEASE_TTL (OpenLeases).
	LeaseTTLSetting = config.Duration("EDGE_LEASE_TTL", 0, time.Second, time.Minute, "presence, edge",
		"an edge silent this long counts as dead. Shared: the lease bucket carries it; a process set to another value refuses to start",
		config.DefaultShown("the deployment's (`3s` when new)"))
)
