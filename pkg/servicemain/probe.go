package servicemain

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"
)

// probeTimeout bounds one probe: a container health check must end well
// within its own timeout.
const probeTimeout = 3 * time.Second

// probe is the health check of a container image that holds nothing but
// the service's binary (no shell, no wget): `SERVICE probe URL` fetches
// URL and exits 0 when it answers 200 OK, else 1 with the reason on out.
func probe(ctx context.Context, url string, out io.Writer) int {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		fmt.Fprintf(out, "probe: %v\n", err)
		return 1
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		fmt.Fprintf(out, "probe: %v\n", err)
		return 1
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(out, "probe: %s answered %s: %s\n", url, resp.Status, body)
		return 1
	}
	return 0
}
