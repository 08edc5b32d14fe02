// Package metrics defines, once, every Prometheus metric BuddyTok exports,
// and serves them. One Metrics belongs to one process: the replicas an
// all-in-one runs share it, so each metric counts the whole process.
// docs/operations.md says what each one means.
package metrics

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics holds the process's collectors.
type Metrics struct {
	reg *prometheus.Registry

	// Edge.
	Sockets                 prometheus.Gauge
	FramesIn                *prometheus.CounterVec // by frame type ("invalid" for a frame refused before its type is known)
	FramesOut               *prometheus.CounterVec // by frame type
	FanoutLag               prometheus.Histogram   // state change stored → its frames queued on every socket
	SlowConsumerDisconnects prometheus.Counter
	SocketWrites            prometheus.Counter     // writes of frames to sockets (several frames may go in one)
	RoomsWatched            prometheus.Gauge       // rooms the edge holds open (a local user is in each)
	RoomChanges             prometheus.Counter     // changes of its rooms' records the edge received
	RoomSyncs               *prometheus.CounterVec // reads of a room's snapshot, by reason
	Refused                 *prometheus.CounterVec // connections and joins refused or closed by an admission limit, by reason (the close or error code)

	// Every service (natsrpc): requests handled, by subject and code.
	Requests *prometheus.HistogramVec

	// Presence.
	ReaperActions *prometheus.CounterVec // by action and outcome
	Rooms         *RoomSizes             // rooms open and users per room, as presence last counted them

	// Tokens.
	OpenTokCalls *prometheus.HistogramVec // by operation and outcome
}

// Outcomes of an action or a call.
const (
	OK     = "ok"
	Failed = "failed"
)

// Outcome is the outcome label of a result.
func Outcome(err error) string {
	if err != nil {
		return Failed
	}
	return OK
}

// latencyBuckets run from half a millisecond to ten seconds.
var latencyBuckets = prometheus.ExponentialBucketsRange(0.0005, 10, 16)

// New returns a process's metrics on a registry of their own, with the Go
// runtime's and the process's.
func New() *Metrics {
	reg := prometheus.NewRegistry()
	m := &Metrics{
		reg: reg,
		Sockets: register(reg, prometheus.NewGauge(prometheus.GaugeOpts{Name: "buddytok_edge_sockets",
			Help: "WebSockets open on the edge."})),
		FramesIn: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{Name: "buddytok_edge_frames_in_total",
			Help: "Frames received from browsers, by type."}, []string{"type"})),
		FramesOut: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{Name: "buddytok_edge_frames_out_total",
			Help: "Frames queued for browsers, by type."}, []string{"type"})),
		FanoutLag: register(reg, prometheus.NewHistogram(prometheus.HistogramOpts{Name: "buddytok_edge_fanout_lag_seconds",
			Help:    "Time from a state change being stored to its frames being queued on every socket of the edge.",
			Buckets: latencyBuckets})),
		SlowConsumerDisconnects: register(reg, prometheus.NewCounter(prometheus.CounterOpts{Name: "buddytok_edge_slow_consumer_disconnects_total",
			Help: "Sockets closed because their browser did not read its frames fast enough."})),
		SocketWrites: register(reg, prometheus.NewCounter(prometheus.CounterOpts{Name: "buddytok_edge_socket_writes_total",
			Help: "Writes of frames to WebSockets; each carries every frame queued for its socket, so frames out divided by writes is the batching."})),
		RoomsWatched: register(reg, prometheus.NewGauge(prometheus.GaugeOpts{Name: "buddytok_edge_rooms_watched",
			Help: "Rooms the edge holds open and receives the changes of: those its connected users are in."})),
		RoomChanges: register(reg, prometheus.NewCounter(prometheus.CounterOpts{Name: "buddytok_edge_room_changes_total",
			Help: "Changes of its rooms' records the edge received from the state stream; none of any other room reach it."})),
		RoomSyncs: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{Name: "buddytok_edge_room_syncs_total",
			Help: "Reads of a room's snapshot, by reason: open (its first user on the edge), gap (a change missed), reconnect (to NATS), dropped (the subscription fell behind), leader (the state stream's leader changed)."},
			[]string{"reason"})),
		Refused: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{Name: "buddytok_edge_refused_total",
			Help: "Connections and joins the edge refused or closed under its limits, by reason (the close or error code: rate_limited, join_timeout, frame_too_large, ...)."},
			[]string{"reason"})),
		Requests: register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "buddytok_requests_seconds",
			Help:    "Requests a service handled over NATS, by subject and result code (ok, or the protocol error code), and how long each took from arrival to reply.",
			Buckets: latencyBuckets}, []string{"subject", "code"})),
		ReaperActions: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{Name: "buddytok_presence_reaper_actions_total",
			Help: "What presence's reaper did: detach (an edge's lease expired), leave (a grace period ran out), purge (deleted records removed), lease_gone (an edge found without its lease though its expiry never arrived), by outcome."},
			[]string{"action", "outcome"})),
		Rooms: register(reg, &RoomSizes{}),
		OpenTokCalls: register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "buddytok_tokens_opentok_calls_seconds",
			Help:    "Calls to the OpenTok REST API, by operation and outcome.",
			Buckets: latencyBuckets}, []string{"operation", "outcome"})),
	}
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// RoomSizes reports the rooms that have users and how many each has, as
// the latest Set gave them: buddytok_rooms_open, and the histogram
// buddytok_room_users (one observation per room). Every presence replica
// counts every room, so take one replica's, or the max, never the sum.
type RoomSizes struct {
	mu    sync.Mutex
	sizes []int
	set   bool
}

var (
	roomsOpenDesc = prometheus.NewDesc("buddytok_rooms_open",
		"Rooms with at least one user, as presence last counted them (every replica counts every room: do not sum).", nil, nil)
	roomUsersDesc = prometheus.NewDesc("buddytok_room_users",
		"Users per room, one observation per room with users, as presence last counted them (every replica counts every room: do not sum).", nil, nil)
	// roomUsersBuckets run from a pair to the lobby's size.
	roomUsersBuckets = []float64{1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000}
)

// Set replaces the counted rooms' sizes.
func (r *RoomSizes) Set(sizes []int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sizes, r.set = sizes, true
}

// Describe implements prometheus.Collector.
func (r *RoomSizes) Describe(ch chan<- *prometheus.Desc) {
	ch <- roomsOpenDesc
	ch <- roomUsersDesc
}

// Collect implements prometheus.Collector; nothing before the first Set
// (a process that runs no presence replica).
func (r *RoomSizes) Collect(ch chan<- prometheus.Metric) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.set {
		return
	}
	buckets := make(map[float64]uint64, len(roomUsersBuckets))
	var sum float64
	for _, n := range r.sizes {
		sum += float64(n)
		for _, b := range roomUsersBuckets {
			if float64(n) <= b {
				buckets[b]++
			}
		}
	}
	ch <- prometheus.MustNewConstMetric(roomsOpenDesc, prometheus.GaugeValue, float64(len(r.sizes)))
	ch <- prometheus.MustNewConstHistogram(roomUsersDesc, uint64(len(r.sizes)), sum, buckets)
}

// Handler serves the metrics in the Prometheus exposition format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// Gatherer is the registry, for tests that read values.
func (m *Metrics) Gatherer() prometheus.Gatherer { return m.reg }

// Since observes the seconds from start on o.
func Since(o prometheus.Observer, start time.Time) { o.Observe(time.Since(start).Seconds()) }

// register adds c to reg and returns it.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	reg.MustRegister(c)
	return c
}

// Scrape reads the metrics that base (a server's URL) serves at /metrics,
// as ReadText does.
func Scrape(ctx context.Context, base string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("metrics: GET %s/metrics: %s", base, resp.Status)
	}
	return ReadText(resp.Body)
}

// ReadText reads metrics in the Prometheus text format (what Handler
// serves) into a map from each sample, its name and labels as written, to
// its value. The tests and operators' scripts use it to check a scrape.
func ReadText(r io.Reader) (map[string]float64, error) {
	samples := map[string]float64{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			return nil, fmt.Errorf("metrics: line %q has no value", line)
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			return nil, fmt.Errorf("metrics: line %q: %w", line, err)
		}
		samples[line[:i]] = v
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	return samples, nil
}
