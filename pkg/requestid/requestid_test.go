package requestid_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"testing"

	"github.com/buddytok/buddytok/pkg/requestid"
)

func TestHandlerNamesTheRequest(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		ctx  context.Context
		want string // request_id in the line; "" for none
	}{
		{"with an ID", requestid.With(context.Background(), "abc"), "abc"},
		{"without", context.Background(), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var buf bytes.Buffer
			log := slog.New(requestid.Handler(slog.NewJSONHandler(&buf, nil))).With("service", "x")
			log.InfoContext(tt.ctx, "hello")
			var line map[string]any
			if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
				t.Fatal(err)
			}
			got, _ := line[requestid.Attr].(string)
			if got != tt.want || line["service"] != "x" {
				t.Errorf("line %v: request_id %q, want %q (and service x)", line, got, tt.want)
			}
		})
	}
}
