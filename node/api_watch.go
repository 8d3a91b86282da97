package node

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"time"

	"connectrpc.com/connect"

	"github.com/verbund/verbund/node/auth"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
	"github.com/verbund/verbund/proto/gen/verbund/registry/v1/registryv1connect"
	"github.com/verbund/verbund/registry"
)

// The change feed's pacing.
const (
	feedBatch     = 256
	snapshotChunk = 2000
	// snapshotChunkBytes bounds a snapshot message's state writes: a
	// stream holds about two chunks (raw, decoded and encoded) at a time.
	snapshotChunkBytes = 128 << 10
	// feedBatchBytes bounds the feed entries a stream reads at a time.
	feedBatchBytes = 1 << 20
	feedHeartbeat  = time.Second
)

// watchAPI serves the WatchService: the change feed members follow
// (follow.go) and clients watch.
type watchAPI struct{ n *Node }

var _ registryv1connect.WatchServiceHandler = watchAPI{}

// Watch streams the change feed (servers only; a member's copy has no feed).
func (a watchAPI) Watch(ctx context.Context, req *connect.Request[registryv1.WatchRequest], stream *connect.ServerStream[registryv1.WatchResponse]) error {
	n := a.n
	if !n.isServer() {
		return connect.NewError(connect.CodeFailedPrecondition, errors.New("members do not serve the change feed; watch a server"))
	}
	withWrites, withValues := req.Msg.GetIncludeStateWrites(), !req.Msg.GetOmitValues()
	send := func(m *registryv1.WatchResponse) error {
		m.SourceAppliedIndex = n.fsm.AppliedIndex()
		m.SentAtUnixMs = time.Now().UnixMilli()
		return stream.Send(m)
	}
	after := req.Msg.GetAfterIndex()
	for {
		changed := n.fsm.Changed()
		// A fresh start reads no feed entries (a snapshot comes first):
		// reading and decoding up to feedBatch entries only to drop them
		// was most of a new stream's memory. Otherwise at most
		// feedBatchBytes of entries at a time.
		limit := feedBatch
		if after == 0 {
			limit = 0
		}
		entries, applied, ok, err := n.reader.FeedAfterBounded(after, limit, feedBatchBytes)
		if err != nil {
			return err
		}
		if !ok || (after == 0 && applied > 0) {
			// Too old for the feed (or a fresh start): a snapshot first,
			// in one of the node's snapshot slots (ratelimit.go).
			release, err := n.limiter.Load().acquireSnapshot(ctx, streamKey(auth.FromContext(ctx)))
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return connect.NewError(connect.CodeResourceExhausted, err)
			}
			after, err = n.streamSnapshot(ctx, withWrites, withValues, send)
			release()
			if err != nil {
				return err
			}
			continue
		}
		for _, e := range entries {
			m := &registryv1.WatchResponse{Index: e.GetIndex(), Changes: registry.Changes(e.GetIndex(), e.GetWrites(), withValues)}
			if withWrites {
				m.Writes = e.GetWrites()
			}
			if err := send(m); err != nil {
				return err
			}
			after = e.GetIndex()
		}
		if len(entries) > 0 {
			continue // more may follow (a batch cut by count or bytes)
		}
		if applied > after {
			// Entries without state writes (refused commands): the
			// receiver is current up to applied.
			after = applied
			if err := send(&registryv1.WatchResponse{Index: after, Heartbeat: true}); err != nil {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-n.runCtx.Done():
			return connect.NewError(connect.CodeUnavailable, errors.New("node shutting down"))
		case <-changed:
		case <-time.After(feedHeartbeat):
			if err := send(&registryv1.WatchResponse{Index: after, Heartbeat: true}); err != nil {
				return err
			}
		}
	}
}

// streamSnapshot sends the whole state as a snapshot and returns its index.
func (n *Node) streamSnapshot(ctx context.Context, withWrites, withValues bool, send func(*registryv1.WatchResponse) error) (uint64, error) {
	first := true
	var pending *registryv1.WatchResponse
	idx, err := n.reader.SnapshotWritesBounded(ctx, snapshotChunk, snapshotChunkBytes, func(ws []*registryv1.StateWrite) error {
		if pending != nil {
			if err := send(pending); err != nil {
				return err
			}
		}
		pending = &registryv1.WatchResponse{Snapshot: true, Reset_: first, Changes: registry.Changes(0, ws, withValues)}
		if withWrites {
			pending.Writes = ws
		}
		first = false
		return nil
	})
	if err != nil {
		return 0, err
	}
	pending.Index, pending.SnapshotDone = idx, true
	for _, c := range pending.Changes {
		c.Index = idx
	}
	return idx, send(pending)
}

// writeDeadline cuts a change feed stream whose client stopped reading:
// each message (the writes up to its flush) must be handed to the
// transport within timeout, else the stream is reset (HTTP/2: RST_STREAM;
// HTTP/1.1: the connection closed), the blocked Send fails and the
// handler returns, freeing its stream slot, snapshot slot and read
// transaction. Between messages no deadline is armed, so an idle stream
// (heartbeats only) is never cut. timeout <= 0: no deadline.
func writeDeadline(h http.Handler, timeout time.Duration) http.Handler {
	if timeout <= 0 {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(&deadlineWriter{ResponseWriter: w, rc: http.NewResponseController(w), timeout: timeout}, r)
	})
}

type deadlineWriter struct {
	http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration

	mu    sync.Mutex
	armed bool
}

func (w *deadlineWriter) arm() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.armed {
		w.armed = w.rc.SetWriteDeadline(time.Now().Add(w.timeout)) == nil
	}
}

func (w *deadlineWriter) disarm() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.armed {
		_ = w.rc.SetWriteDeadline(time.Time{})
		w.armed = false
	}
}

func (w *deadlineWriter) Write(p []byte) (int, error) {
	w.arm()
	return w.ResponseWriter.Write(p)
}

// Flush hands the message to the transport; it blocks while the client's
// flow-control window is full.
func (w *deadlineWriter) Flush() {
	w.arm()
	_ = w.rc.Flush()
	w.disarm()
}

func (w *deadlineWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
