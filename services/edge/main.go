// Command edge runs one BuddyTok edge replica: the web client, the
// WebSocket endpoint and the HTTP API. Settings come from the environment;
// see README.md.
package main

import (
	"github.com/buddytok/buddytok/pkg/servicemain"
	"github.com/buddytok/buddytok/services/edge/edge"
)

func main() { servicemain.Main(edge.Program) }
