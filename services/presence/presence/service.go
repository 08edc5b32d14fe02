package presence

import (
	"github.com/buddytok/buddytok/pkg/protocol"
	"github.com/buddytok/buddytok/pkg/servicemain"
)

// Program is the presence service as its binary (servicemain.Main) and the
// all-in-one start it.
var Program = servicemain.Define(protocol.ServicePresence, ConfigFromEnv, New)
