// Command presence runs one replica of the BuddyTok presence service.
// Settings come from the environment; see README.md.
package main

import (
	"github.com/buddytok/buddytok/pkg/servicemain"
	"github.com/buddytok/buddytok/services/presence/presence"
)

func main() { servicemain.Main(presence.Program) }
