package state

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/synadia-io/orbit.go/jetstreamext"

	"github.com/buddytok/buddytok/pkg/protocol"
	"github.com/buddytok/buddytok/pkg/retry"
)

// Bucket is the KV bucket that holds users, invitations and chats. They
// share one bucket so that one atomic batch can change any of them together.
const Bucket = "buddytok"

// History is how many revisions of each key the bucket keeps. Snapshot
// needs the revision each key had at one stream sequence; keeping a few
// lets it read a consistent state while writes go on. Deleted keys are
// purged by PurgeDeleted.
const History = 8

var (
	// ErrNotFound: the record does not exist (any more).
	ErrNotFound = errors.New("state: record not found")
	// ErrConflict: a record changed since it was read; the transaction
	// changed nothing. Re-read and try again.
	ErrConflict = errors.New("state: record changed concurrently")
)

// headerBatchSequence numbers the messages of an atomic batch from 1, and
// headerBatchCommit marks its last message; the server keeps both on the
// stored messages.
const (
	headerBatchSequence = "Nats-Batch-Sequence"
	headerBatchCommit   = "Nats-Batch-Commit"
)

// Options configure the buckets.
type Options struct {
	// Replicas of each bucket's stream (1 on a single server, 3 in a
	// cluster). 0 takes what the buckets have (1 for a new one); any other
	// number must equal it (ErrSettingMismatch): a bucket's replicas are
	// chosen when the deployment is created.
	Replicas int
}

// Store reads and changes the state bucket.
type Store struct {
	js     jetstream.JetStream
	kv     jetstream.KeyValue
	stream string
	prefix string // subject prefix of the bucket's keys
}

// Open creates the state bucket if needed, enables atomic batches on its
// stream, and returns a Store. Every service replica calls it at start;
// it is idempotent.
func Open(ctx context.Context, nc *nats.Conn, opts Options) (*Store, error) {
	var st *Store
	err := retryJetStream(ctx, func(ctx context.Context) error {
		var err error
		st, err = open(ctx, nc, opts)
		return err
	})
	return st, err
}

// retryJetStream runs a JetStream set-up step until it succeeds, fails
// with a setting mismatch, or ctx ends, each attempt bounded by a few
// seconds. On a cluster the JetStream API does not answer, for a moment,
// requests about a stream that is being created or is electing a leader:
// a process starting with others, or while a NATS node restarts, tries
// again rather than waiting out one long timeout or giving up.
func retryJetStream(ctx context.Context, step func(context.Context) error) error {
	return retry.Do(ctx, retry.Policy{
		Initial: 100 * time.Millisecond, Max: 2 * time.Second,
		Retryable: func(err error) bool { return !errors.Is(err, ErrSettingMismatch) },
	}, func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		return step(ctx)
	})
}

func open(ctx context.Context, nc *nats.Conn, opts Options) (*Store, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("state: jetstream: %w", err)
	}
	stream := "KV_" + Bucket
	// The KV handle opened below reads the stream's settings, so they are
	// right before it is opened.
	if err := ensureStateStream(ctx, js, stream, opts); err != nil {
		return nil, err
	}
	kv, err := openOrCreate(ctx, js, jetstream.KeyValueConfig{
		Bucket:      Bucket,
		Description: "BuddyTok users, invitations and chats",
		History:     History,
		Storage:     jetstream.FileStorage,
		Replicas:    max(opts.Replicas, 1),
	}, opts)
	if err != nil {
		return nil, err
	}
	return &Store{js: js, kv: kv, stream: stream, prefix: "$KV." + Bucket + "."}, nil
}

// openOrCreate opens an existing bucket as it is (its stream carries
// settings that a plain KV update would reset) or creates it, and checks
// that its replicas are those opts asks for, if it asks.
func openOrCreate(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig, opts Options) (jetstream.KeyValue, error) {
	var kv jetstream.KeyValue
	// Another process may create the bucket between our open and create:
	// then open it again.
	err := retry.Do(ctx, retry.Policy{Initial: time.Millisecond, Max: 10 * time.Millisecond, Attempts: 3,
		Retryable: func(err error) bool { return errors.Is(err, jetstream.ErrBucketExists) }},
		func(ctx context.Context) error {
			var err error
			kv, err = js.KeyValue(ctx, cfg.Bucket)
			if err == nil {
				return nil
			}
			if !errors.Is(err, jetstream.ErrBucketNotFound) {
				return fmt.Errorf("state: open bucket %s: %w", cfg.Bucket, err)
			}
			kv, err = js.CreateKeyValue(ctx, cfg)
			if err != nil {
				return fmt.Errorf("state: create bucket %s: %w", cfg.Bucket, err)
			}
			return nil
		})
	if err != nil {
		return nil, err
	}
	if opts.Replicas == 0 {
		return kv, nil
	}
	st, err := kv.Status(ctx)
	if err != nil {
		return nil, fmt.Errorf("state: bucket %s: %w", cfg.Bucket, err)
	}
	bs, ok := st.(*jetstream.KeyValueBucketStatus)
	if !ok {
		return nil, fmt.Errorf("state: bucket %s: no stream status to check its replicas", cfg.Bucket)
	}
	if have := bs.StreamInfo().Config.Replicas; have != opts.Replicas {
		return nil, fmt.Errorf("state: KV_REPLICAS is %d here but the deployment's bucket %s has %d: set it to %d or leave it unset: %w",
			opts.Replicas, cfg.Bucket, have, have, ErrSettingMismatch)
	}
	return kv, nil
}

// ensureStateStream makes the state bucket's stream exist with atomic
// batches on, direct gets off and each room's records republished on its
// room's subject (RoomSubject), reading it once.
//
// A new stream is created as a KV bucket's stream with those settings from
// the start. Creating it as a bucket and then updating the stream would be
// simpler, but on a NATS cluster concurrent stream updates from replicas
// starting together stall the JetStream API for everyone (seen with
// nats-server 2.15.2: every request timed out for 30 s), while identical
// concurrent creates are idempotent. Only a stream made by an earlier
// version is updated.
//
// Direct gets are off because any replica may answer one, and a follower
// may not have applied the latest writes yet: a transition that read "this
// chat no longer exists" from a lagging follower would remove a user while
// its chat stays (the cluster test found exactly that). A record's absence
// cannot be guarded by a revision, so reads go to the stream's leader.
func ensureStateStream(ctx context.Context, js jetstream.JetStream, stream string, opts Options) error {
	s, err := js.Stream(ctx, stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		_, err = js.CreateStream(ctx, jetstream.StreamConfig{
			Name:               stream,
			Description:        "BuddyTok users, invitations and chats",
			Subjects:           []string{"$KV." + Bucket + ".>"},
			MaxMsgsPerSubject:  History,
			MaxBytes:           -1,
			MaxMsgSize:         -1,
			MaxMsgs:            -1,
			MaxConsumers:       -1,
			Storage:            jetstream.FileStorage,
			Replicas:           max(opts.Replicas, 1),
			AllowRollup:        true,
			DenyDelete:         true,
			AllowDirect:        false,
			Duplicates:         2 * time.Minute,
			Discard:            jetstream.DiscardNew,
			AllowAtomicPublish: true,
			RePublish:          stateRePublish,
		})
		if err != nil && !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			return fmt.Errorf("state: create stream %s: %w", stream, err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("state: stream %s: %w", stream, err)
	}
	cfg := s.CachedInfo().Config
	if cfg.AllowAtomicPublish && !cfg.AllowDirect && cfg.RePublish != nil && *cfg.RePublish == *stateRePublish {
		return nil
	}
	cfg.AllowAtomicPublish, cfg.AllowDirect, cfg.RePublish = true, false, stateRePublish
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		return fmt.Errorf("state: enable atomic batches and rooms' republishing on %s: %w", stream, err)
	}
	return nil
}

// JetStream returns the JetStream context the store uses.
func (s *Store) JetStream() jetstream.JetStream { return s.js }

// KV returns the bucket, for watchers.
func (s *Store) KV() jetstream.KeyValue { return s.kv }

// GetUser reads a user record of room and its revision.
func (s *Store) GetUser(ctx context.Context, room, id string) (User, uint64, error) {
	return get[User](ctx, s, UserKey(room, id))
}

// GetInvitation reads an invitation record of room and its revision.
func (s *Store) GetInvitation(ctx context.Context, room, id string) (protocol.Invitation, uint64, error) {
	return get[protocol.Invitation](ctx, s, InvitationKey(room, id))
}

// GetChat reads a chat record of room and its revision.
func (s *Store) GetChat(ctx context.Context, room, id string) (Chat, uint64, error) {
	return get[Chat](ctx, s, ChatKey(room, id))
}

// readAttempt bounds one read of a record. A read sent on a connection
// that dies, or to a stream leader that just went away, is never answered:
// after readAttempt it is sent again (reads are safe to repeat) for as long
// as the caller's context lasts.
const readAttempt = 2 * time.Second

// read runs one read, bounded by readAttempt, until it succeeds, fails
// with notFound, or ctx ends.
func read(ctx context.Context, notFound error, attempt func(context.Context) error) error {
	return retry.Do(ctx, retry.Policy{Initial: 20 * time.Millisecond, Max: 500 * time.Millisecond,
		Retryable: func(err error) bool { return !errors.Is(err, notFound) }},
		func(ctx context.Context) error {
			ctx, cancel := context.WithTimeout(ctx, readAttempt)
			defer cancel()
			return attempt(ctx)
		})
}

func get[T any](ctx context.Context, s *Store, key string) (T, uint64, error) {
	var v T
	var e jetstream.KeyValueEntry
	err := read(ctx, jetstream.ErrKeyNotFound, func(ctx context.Context) error {
		var err error
		e, err = s.kv.Get(ctx, key)
		return err
	})
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return v, 0, fmt.Errorf("%s: %w", key, ErrNotFound)
	}
	if err != nil {
		return v, 0, fmt.Errorf("state: get %s: %w", key, err)
	}
	if err := json.Unmarshal(e.Value(), &v); err != nil {
		return v, 0, fmt.Errorf("state: decode %s: %w", key, err)
	}
	return v, e.Revision(), nil
}

// Txn is a set of writes that commit together or not at all. Every write
// names the revision it expects the key to have (0: must not exist).
type Txn struct {
	msgs []*nats.Msg
	keys map[string]bool
	err  error
}

// Put writes v as JSON under key, expecting revision rev.
func (t *Txn) Put(key string, rev uint64, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		t.fail(fmt.Errorf("state: encode %s: %w", key, err))
		return
	}
	t.add(key, rev, data, nil)
}

// PutInGroup writes v as JSON under a key that must not exist, expecting
// the newest revision of every key matching the filter group (a key
// pattern with wildcards, e.g. a room's users) to be groupRev: a write to
// any of them since refuses it (ErrConflict, and ConflictLast tells the
// group's revision). It must be the transaction's first write: the
// writes after it (new members of the group, say) commit with it or not
// at all.
func (t *Txn) PutInGroup(key, group string, groupRev uint64, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		t.fail(fmt.Errorf("state: encode %s: %w", key, err))
		return
	}
	t.add(key, groupRev, data, nats.Header{jetstream.ExpectedLastSubjSeqSubjHeader: []string{group}})
}

// Delete removes key, expecting revision rev.
func (t *Txn) Delete(key string, rev uint64) {
	t.add(key, rev, nil, nats.Header{"KV-Operation": []string{"DEL"}})
}

func (t *Txn) add(key string, rev uint64, data []byte, h nats.Header) {
	if t.keys == nil {
		t.keys = map[string]bool{}
	}
	if t.keys[key] {
		t.fail(fmt.Errorf("state: key %s written twice in one transaction", key))
		return
	}
	t.keys[key] = true
	if h == nil {
		h = nats.Header{}
	}
	h.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(rev, 10))
	t.msgs = append(t.msgs, &nats.Msg{Subject: key, Data: data, Header: h})
}

func (t *Txn) fail(err error) {
	if t.err == nil {
		t.err = err
	}
}

// Commit applies t atomically. If any key's revision moved, nothing changes
// and the error wraps ErrConflict.
//
// A write to one key is published on its own, guarded by the same expected
// revision; only writes to several keys go as an atomic batch. The
// difference matters: on a stream with one replica in file storage the
// server stages every atomic batch in an on-disk store of its own, created
// and removed under the stream's lock, which costs milliseconds and
// serialises every batch of the bucket (BenchmarkCommit), while a single
// guarded publish costs tens of microseconds.
func (s *Store) Commit(ctx context.Context, t *Txn) error {
	_, err := s.CommitAt(ctx, t)
	return err
}

// CommitAt is Commit, and returns the stream sequence of the
// transaction's last write: the revision its key now has.
func (s *Store) CommitAt(ctx context.Context, t *Txn) (uint64, error) {
	if t.err != nil {
		return 0, t.err
	}
	if len(t.msgs) == 0 {
		return 0, nil
	}
	msgs := make([]*nats.Msg, len(t.msgs))
	for i, m := range t.msgs {
		// A Txn is built for one attempt; its headers may be reused here.
		if group := m.Header.Get(jetstream.ExpectedLastSubjSeqSubjHeader); group != "" {
			if i > 0 {
				// Checked after the writes before it, the group's
				// newest would be theirs, unknown to the caller.
				return 0, fmt.Errorf("state: a write guarded by group %s must be its transaction's first", group)
			}
			if !strings.HasPrefix(group, s.prefix) {
				m.Header.Set(jetstream.ExpectedLastSubjSeqSubjHeader, s.prefix+group)
			}
		}
		msgs[i] = &nats.Msg{Subject: s.prefix + m.Subject, Data: m.Data, Header: m.Header}
	}
	var seq uint64
	var err error
	if len(msgs) == 1 {
		var ack *jetstream.PubAck
		if ack, err = s.js.PublishMsg(ctx, msgs[0]); err == nil {
			seq = ack.Sequence
		}
	} else {
		var ack *jetstreamext.BatchAck
		if ack, err = jetstreamext.PublishMsgBatch(ctx, s.js, msgs); err == nil {
			seq = ack.Sequence
		}
	}
	if err == nil {
		return seq, nil
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode {
		case jetstream.JSErrCodeStreamWrongLastSequence:
			last, _ := strconv.ParseUint(strings.TrimPrefix(apiErr.Description, "wrong last sequence: "), 10, 64)
			return 0, &conflictError{last: last, desc: apiErr.Description}
		case jetstream.JSErrCodeStreamWrongLastSequenceConstant,
			jetstreamext.JSErrCodeAtomicPublishTooManyInflight, jetstreamext.JSErrCodeBatchPublishTooManyInflight:
			return 0, &conflictError{desc: apiErr.Description}
		}
	}
	return 0, fmt.Errorf("state: commit: %w", err)
}

// GroupLast returns the newest revision of any key matching the filter
// group (0: none stored), as the stream's leader has it.
func (s *Store) GroupLast(ctx context.Context, group string) (uint64, error) {
	var seq uint64
	err := read(ctx, jetstream.ErrMsgNotFound, func(ctx context.Context) error {
		st, err := s.js.Stream(ctx, s.stream)
		if err != nil {
			return err
		}
		m, err := st.GetLastMsgForSubject(ctx, s.prefix+group)
		if err != nil {
			return err
		}
		seq = m.Sequence
		return nil
	})
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("state: newest of %s: %w", group, err)
	}
	return seq, nil
}

// conflictError is ErrConflict with the revision the server found.
type conflictError struct {
	last uint64 // 0: not told
	desc string
}

func (e *conflictError) Error() string { return ErrConflict.Error() + " (" + e.desc + ")" }
func (e *conflictError) Unwrap() error { return ErrConflict }

// ConflictLast returns, for a transaction refused because a revision
// moved, the revision the server found (for a PutInGroup, the group's
// newest), if it said.
func ConflictLast(err error) (uint64, bool) {
	var c *conflictError
	if errors.As(err, &c) && c.last > 0 {
		return c.last, true
	}
	return 0, false
}

// conflictRetry spaces the optimistic retries of one transition: the
// losers of one round back off at random so they do not collide again.
// The attempts bound a context without a deadline; with one, the deadline
// ends them first.
var conflictRetry = retry.Policy{
	Initial: time.Millisecond, Max: 50 * time.Millisecond, Attempts: 100,
	Retryable: func(err error) bool { return errors.Is(err, ErrConflict) },
}

// Retry runs attempt until it returns something other than ErrConflict or
// ctx ends, backing off between attempts. When ctx ends the error wraps
// ctx.Err(); when the attempts run out it is a CodeConflict protocol error.
func Retry(ctx context.Context, attempt func(context.Context) error) error {
	err := retry.Do(ctx, conflictRetry, attempt)
	if errors.Is(err, ErrConflict) && ctx.Err() == nil {
		return protocol.Errorf(protocol.CodeConflict, "too many concurrent changes; try again")
	}
	return err
}

// Snapshot is the whole state at one stream sequence. IDs are unique
// across rooms; RoomOf names the room under whose key each record is.
type Snapshot struct {
	Sequence    uint64
	Users       map[string]User
	Invitations map[string]protocol.Invitation
	Chats       map[string]Chat
	RoomOf      map[string]string
}

var errSnapshotMoved = errors.New("state: snapshot: keys change too fast to read a consistent state")

// Snapshot reads every record as of one point in the stream, so that the
// invariants can be checked on a consistent state while writes go on.
func (s *Store) Snapshot(ctx context.Context) (Snapshot, error) {
	var snap Snapshot
	err := retry.Do(ctx, retry.Policy{Initial: time.Millisecond, Max: 10 * time.Millisecond, Attempts: 20,
		Retryable: func(err error) bool { return errors.Is(err, errSnapshotMoved) }},
		func(ctx context.Context) error {
			var ok bool
			var err error
			snap, ok, err = s.snapshotOnce(ctx)
			if err == nil && !ok {
				return errSnapshotMoved
			}
			return err
		})
	if err != nil {
		return Snapshot{}, err
	}
	return snap, nil
}

// snapshotReadLimit bounds how long one snapshot may read. A record that
// PurgeDeleted rolls up while a snapshot reads it was deleted at least the
// purge's age before; as long as that age exceeds this limit, the delete
// came before the snapshot's sequence (see snapshotOnce).
const snapshotReadLimit = time.Minute

// snapshotIdle is how long a snapshot reads nothing before it asks the
// stream whether any message is left to read.
const snapshotIdle = 500 * time.Millisecond

// snapshotConsumerIdle is how long the server keeps a snapshot's consumer
// that nobody reads, in case deleting it failed (its node was down). The
// library's default, five minutes, let a process that snapshots often pile
// up consumers to the server's limit per stream (1,000): then no consumer
// could be made on the state stream, not even an edge's buddy list watcher.
const snapshotConsumerIdle = 30 * time.Second

// deleteConsumer removes a snapshot's consumer once it is read (stopping
// its iterator does not).
func (s *Store) deleteConsumer(cons jetstream.Consumer) {
	info := cons.CachedInfo()
	if info == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = s.js.DeleteConsumer(ctx, s.stream, info.Name) // else snapshotConsumerIdle removes it
}

// snapshotOnce reads the state at the stream's current last sequence. It
// reports !ok when some key changed so often since that its revision at
// that sequence is no longer kept, or when the read took so long that a
// purge may have misled it.
func (s *Store) snapshotOnce(ctx context.Context) (Snapshot, bool, error) {
	began := time.Now()
	snap := Snapshot{Users: map[string]User{}, Invitations: map[string]protocol.Invitation{}, Chats: map[string]Chat{}, RoomOf: map[string]string{}}
	st, err := s.js.Stream(ctx, s.stream)
	if err != nil {
		return snap, false, fmt.Errorf("state: snapshot: %w", err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return snap, false, fmt.Errorf("state: snapshot: %w", err)
	}
	if info.State.Msgs == 0 {
		return snap, true, nil
	}
	r := snapshotRead{last: info.State.LastSeq, atLast: map[string]jetstream.Msg{}, newer: map[string]int{}, purged: map[string]bool{}}
	if err := s.readSnapshot(ctx, st, &r); err != nil {
		return snap, false, err
	}
	snap.Sequence = r.sequence
	// A key with History revisions newer than last may have lost, while it
	// was being read, the revision it had at last: the history limit drops
	// the oldest first, and only once History newer ones exist. Then the
	// snapshot cannot be trusted, and is read again.
	for _, n := range r.newer {
		if n >= History {
			return snap, false, nil
		}
	}
	// PurgeDeleted replaces the revisions of a record deleted long ago
	// with one purge marker. A snapshot that read the record's last put
	// before that then finds its delete gone, but the marker in its
	// place, after last: the record counts as deleted.
	if time.Since(began) > snapshotReadLimit {
		return snap, false, nil
	}
	for key, m := range r.atLast {
		if op := m.Headers().Get("KV-Operation"); op == "DEL" || op == "PURGE" || r.purged[key] {
			continue
		}
		if err := snap.add(key, m.Data()); err != nil {
			return snap, false, err
		}
	}
	return snap, true, nil
}

// snapshotRead is what one read of the state stream for a snapshot found.
type snapshotRead struct {
	last     uint64                   // the stream's last sequence when the snapshot began
	sequence uint64                   // the snapshot's: the newest message it holds
	atLast   map[string]jetstream.Msg // each key's newest message in the snapshot
	newer    map[string]int           // how many newer ones each key has
	purged   map[string]bool          // keys PurgeDeleted rolled up
}

// record files one message of the stream under its key: in the snapshot
// if it is at or before last, or belongs to a batch that began there.
// Stream info may report a last sequence in the middle of an atomic batch
// being applied; batches are stored contiguously and their messages carry
// Nats-Batch-Sequence, so the rest of such a batch belongs to the snapshot
// too.
func (r *snapshotRead) record(key string, m jetstream.Msg, seq, batchSeq uint64) {
	if m.Headers().Get("KV-Operation") == "PURGE" {
		// PurgeDeleted rolls up only records deleted long ago: before
		// this snapshot began, however late the marker.
		r.purged[key] = true
	}
	if seq <= r.last || batchSeq > 1 && seq-batchSeq+1 <= r.last {
		r.atLast[key] = m
		r.sequence = max(r.sequence, seq)
	} else {
		r.newer[key]++
	}
}

// readSnapshot reads the state stream from its start to its end into r.
// A message that said more were pending may have been followed by a purge
// of all of them; then nothing more comes. A watcher ends the read when
// nothing came for a while and the stream holds no message after the last
// one read. (The read itself waits in one call, so the iterator's
// heartbeat check still finds a consumer that was lost, on a NATS node
// that restarted, and replaces it.)
func (s *Store) readSnapshot(ctx context.Context, st jetstream.Stream, r *snapshotRead) error {
	cons, err := s.js.OrderedConsumer(ctx, s.stream, jetstream.OrderedConsumerConfig{InactiveThreshold: snapshotConsumerIdle})
	if err != nil {
		return fmt.Errorf("state: snapshot consumer: %w", err)
	}
	defer s.deleteConsumer(cons)
	it, err := cons.Messages(jetstream.PullMaxMessages(1000), jetstream.PullHeartbeat(2*time.Second))
	if err != nil {
		return fmt.Errorf("state: snapshot consumer: %w", err)
	}
	defer it.Stop()
	readCtx, endRead := context.WithCancel(ctx)
	var read, delivered atomic.Uint64
	watcherDone := make(chan struct{})
	go func() {
		defer close(watcherDone)
		endWhenDrained(readCtx, endRead, st, &read, &delivered)
	}()
	defer func() { endRead(); <-watcherDone }()
	for {
		m, err := it.Next(jetstream.NextContext(readCtx))
		if err != nil && readCtx.Err() != nil && ctx.Err() == nil {
			return nil // nothing left to read
		}
		if err != nil {
			return fmt.Errorf("state: snapshot read: %w", err)
		}
		delivered.Add(1)
		meta, err := m.Metadata()
		if err != nil {
			return fmt.Errorf("state: snapshot metadata: %w", err)
		}
		seq := meta.Sequence.Stream
		read.Store(seq)
		batchSeq, _ := strconv.ParseUint(m.Headers().Get(headerBatchSequence), 10, 64)
		r.record(strings.TrimPrefix(m.Subject(), s.prefix), m, seq, batchSeq)
		if meta.NumPending > 0 {
			continue
		}
		// The end of the stream. A batch's messages are stored one after
		// the other, so it may end, for a moment, in the middle of one;
		// then the rest of the batch belongs to the snapshot too.
		if batchSeq == 0 || m.Headers().Get(headerBatchCommit) != "" {
			return nil
		}
		more, err := storedAfter(ctx, st, seq)
		if err != nil {
			return err
		}
		if !more {
			return nil
		}
	}
}

// endWhenDrained calls end once nothing was delivered for snapshotIdle
// and the stream holds no message after the last one read, or when ctx
// ends.
func endWhenDrained(ctx context.Context, end context.CancelFunc, st jetstream.Stream, read, delivered *atomic.Uint64) {
	tick := time.NewTicker(snapshotIdle)
	defer tick.Stop()
	seen := delivered.Load()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if n := delivered.Load(); n != seen {
			seen = n
			continue
		}
		if more, err := storedAfter(ctx, st, read.Load()); err == nil && !more {
			end()
			return
		}
	}
}

// storedAfter reports whether the stream holds a message after seq, once
// any batch being stored has been stored whole: a message read is isolated
// from batch writes (the server holds readers off until a batch is
// complete). A stream that still ends inside a batch after that lost the
// batch's last messages to a purge (PurgeDeleted), and ends there.
func storedAfter(ctx context.Context, st jetstream.Stream, seq uint64) (bool, error) {
	_, err := st.GetMsg(ctx, seq+1, jetstream.WithGetMsgSubject(">"))
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return false, nil
	default:
		return false, fmt.Errorf("state: snapshot: %w", err)
	}
}

// PurgeDeleted removes, in two steps, the records deleted longer than
// olderThan ago, so that ended invitations and chats and departed users do
// not pile up. First the revisions of such a record are rolled up into one
// purge marker; a later call removes a marker older than olderThan. A
// snapshot reading meanwhile sees either the record's delete or, if it read
// the record before the roll-up, the marker that replaced it (see
// snapshotOnce); it stays exact while olderThan is longer than a snapshot
// may read (snapshotReadLimit, a minute). It returns how many records it
// rolled up or removed.
func (s *Store) PurgeDeleted(ctx context.Context, olderThan time.Duration) (int, error) {
	w, err := s.kv.WatchAll(ctx, jetstream.MetaOnly())
	if err != nil {
		return 0, fmt.Errorf("state: purge: %w", err)
	}
	defer func() { _ = w.Stop() }()
	type old struct {
		key string
		rev uint64
		op  jetstream.KeyValueOp
	}
	var olds []old
	limit := time.Now().Add(-olderThan)
	for e := range w.Updates() {
		if e == nil {
			break
		}
		if op := e.Operation(); (op == jetstream.KeyValueDelete || op == jetstream.KeyValuePurge) && e.Created().Before(limit) {
			olds = append(olds, old{e.Key(), e.Revision(), op})
		}
	}
	_ = w.Stop()
	st, err := s.js.Stream(ctx, s.stream)
	if err != nil {
		return 0, fmt.Errorf("state: purge: %w", err)
	}
	for i, o := range olds {
		if o.op == jetstream.KeyValueDelete {
			err = s.kv.Purge(ctx, o.key, jetstream.LastRevision(o.rev))
		} else {
			err = st.Purge(ctx, jetstream.WithPurgeSubject(s.prefix+o.key))
		}
		if err != nil {
			return i, fmt.Errorf("state: purge %s: %w", o.key, err)
		}
	}
	return len(olds), nil
}

func (snap *Snapshot) add(key string, data []byte) error {
	k, ok := ParseKey(key)
	if !ok {
		return nil // not a record (OldLayout clears such keys)
	}
	var err error
	switch k.Kind {
	case KindUser:
		var u User
		err = json.Unmarshal(data, &u)
		snap.Users[u.ID] = u
		snap.RoomOf[u.ID] = k.Room
	case KindInvitation:
		var inv protocol.Invitation
		err = json.Unmarshal(data, &inv)
		snap.Invitations[inv.ID] = inv
		snap.RoomOf[inv.ID] = k.Room
	case KindChat:
		var c Chat
		err = json.Unmarshal(data, &c)
		snap.Chats[c.ID] = c
		snap.RoomOf[c.ID] = k.Room
	}
	if err != nil {
		return fmt.Errorf("state: decode %s: %w", key, err)
	}
	return nil
}
