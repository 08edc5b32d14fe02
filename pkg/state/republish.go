package state

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/buddytok/buddytok/pkg/retry"
)

// The state stream republishes every record it stores, as it stores it, on
// a core NATS subject named for the record's room (docs/rooms.md): an edge
// subscribes to the rooms its users are in and receives nothing of the
// others. The stream itself announces, so no writer can die between a
// commit and its announcement.
const (
	republishSource = "$KV." + Bucket + "." + roomsPrefix + ">"
	republishPrefix = "buddytok.room."
	// RepublishAll is every room's republished changes (permissions).
	RepublishAll = republishPrefix + ">"
)

// stateRePublish is the state stream's RePublish setting.
var stateRePublish = &jetstream.RePublish{Source: republishSource, Destination: RepublishAll}

// RoomSubject is the subject filter of room's republished changes.
func RoomSubject(room string) string { return republishPrefix + room + ".>" }

// LeaderElectedSubject is the JetStream advisory sent when the state
// stream gets a new leader: a change it committed just before may not
// have been republished.
const LeaderElectedSubject = "$JS.EVENT.ADVISORY.STREAM.LEADER_ELECTED.KV_" + Bucket

// Change is one record as the stream stored it and republished it.
type Change struct {
	Key
	Seq     uint64 // its stream sequence: the record's revision
	Last    uint64 // the key's revision before it (0: none stored)
	Deleted bool   // a delete or purge, not a value
	Value   []byte
	Stored  time.Time
}

var errNotRepublished = errors.New("state: not a republished record")

// ParseRepublished reads a republished record.
func ParseRepublished(m *nats.Msg) (Change, error) {
	rest, ok := strings.CutPrefix(m.Subject, republishPrefix)
	if !ok {
		return Change{}, fmt.Errorf("%w: subject %.80q", errNotRepublished, m.Subject)
	}
	k, ok := ParseKey(roomsPrefix + rest)
	if !ok {
		return Change{}, fmt.Errorf("%w: subject %.80q", errNotRepublished, m.Subject)
	}
	seq, err := strconv.ParseUint(m.Header.Get(jetstream.SequenceHeader), 10, 64)
	if err != nil || seq == 0 {
		return Change{}, fmt.Errorf("%w: %s without a sequence", errNotRepublished, m.Subject)
	}
	last, err := strconv.ParseUint(m.Header.Get(jetstream.LastSequenceHeader), 10, 64)
	if err != nil {
		return Change{}, fmt.Errorf("%w: %s without its key's last sequence", errNotRepublished, m.Subject)
	}
	stored, _ := time.Parse(time.RFC3339Nano, m.Header.Get(jetstream.TimeStampHeaer))
	op := m.Header.Get("KV-Operation")
	return Change{Key: k, Seq: seq, Last: last, Deleted: op == "DEL" || op == "PURGE", Value: m.Data, Stored: stored}, nil
}

// ReadRoom reads every record of room as the stream's leader holds it now,
// deleted ones included (Deleted), each at its revision (Seq; Last is not
// known). Together with a subscription to RoomSubject made before it, it
// is a room's snapshot and every change after it. It makes one short-lived
// consumer (direct gets are off on the state stream: see
// ensureStateStream), tried again while ctx lasts if an attempt fails.
func (s *Store) ReadRoom(ctx context.Context, room string) ([]Change, error) {
	var out []Change
	err := retry.Do(ctx, retry.Policy{Initial: 50 * time.Millisecond, Max: time.Second}, func(ctx context.Context) error {
		actx, cancel := context.WithTimeout(ctx, roomReadAttempt)
		defer cancel()
		var err error
		out, err = s.readRoom(actx, room)
		return err
	})
	return out, err
}

// roomReadAttempt bounds one attempt to read a room: a consumer made on a
// stream leader that just went away is never answered.
const roomReadAttempt = 5 * time.Second

func (s *Store) readRoom(ctx context.Context, room string) ([]Change, error) {
	w, err := s.kv.Watch(ctx, RoomPrefix(room)+">")
	if err != nil {
		return nil, fmt.Errorf("state: read room %s: %w", room, err)
	}
	defer func() { _ = w.Stop() }()
	var out []Change
	for {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("state: read room %s: %w", room, ctx.Err())
		case e, ok := <-w.Updates():
			if !ok {
				return nil, fmt.Errorf("state: read room %s: the watcher stopped", room)
			}
			if e == nil {
				return out, nil
			}
			k, ok := ParseKey(e.Key())
			if !ok {
				continue
			}
			out = append(out, Change{Key: k, Seq: e.Revision(), Deleted: e.Operation() != jetstream.KeyValuePut,
				Value: e.Value(), Stored: e.Created()})
		}
	}
}
