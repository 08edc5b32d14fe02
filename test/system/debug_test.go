package system_test

import (
	"context"
	"fmt"
	"strings"

	"github.com/buddytok/buddytok/pkg/state"
)

func dumpKey(ctx context.Context, st *state.Store, key string) string {
	var b strings.Builder
	hist, err := st.KV().History(ctx, key)
	if err != nil {
		return err.Error()
	}
	for _, e := range hist {
		fmt.Fprintf(&b, "  %s rev=%d op=%v %s\n", key, e.Revision(), e.Operation(), e.Value())
	}
	return b.String()
}
