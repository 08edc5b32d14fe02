package edge

import "github.com/buddytok/buddytok/pkg/servicemain"

// Program is the edge service as its binary (servicemain.Main) and the
// all-in-one start it.
var Program = servicemain.Define("edge", ConfigFromEnv, New)
