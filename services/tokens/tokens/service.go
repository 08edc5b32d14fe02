package tokens

import (
	"github.com/buddytok/buddytok/pkg/protocol"
	"github.com/buddytok/buddytok/pkg/servicemain"
)

// Program is the tokens service as its binary (servicemain.Main) and the
// all-in-one start it.
var Program = servicemain.Define(protocol.ServiceTokens, ConfigFromEnv, New)
