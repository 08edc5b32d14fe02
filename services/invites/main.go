// Command invites runs one replica of the BuddyTok invites service.
// Settings come from the environment; see README.md.
package main

import (
	"github.com/buddytok/buddytok/pkg/servicemain"
	"github.com/buddytok/buddytok/services/invites/invites"
)

func main() { servicemain.Main(invites.Program) }
