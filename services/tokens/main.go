// Command tokens runs one replica of the BuddyTok tokens service.
// Settings come from the environment; see README.md.
package main

import (
	"github.com/buddytok/buddytok/pkg/servicemain"
	"github.com/buddytok/buddytok/services/tokens/tokens"
)

func main() { servicemain.Main(tokens.Program) }
