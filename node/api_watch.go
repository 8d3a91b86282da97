package node

import (
	"context"
	"errors"
	"time"

	"connectrpc.com/connect"

	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
	"github.com/verbund/verbund/proto/gen/verbund/registry/v1/registryv1connect"
	"github.com/verbund/verbund/registry"
)

// The change feed's pacing.
const (
	feedBatch     = 256
	snapshotChunk = 2000
	feedHeartbeat = time.Second
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
		entries, applied, ok, err := n.reader.FeedAfter(after, feedBatch)
		if err != nil {
			return err
		}
		if !ok || (after == 0 && applied > 0) {
			// Too old for the feed (or a fresh start): a snapshot first.
			if after, err = n.streamSnapshot(ctx, withWrites, withValues, send); err != nil {
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
		if len(entries) == feedBatch {
			continue
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
	idx, err := n.reader.SnapshotWrites(ctx, snapshotChunk, func(ws []*registryv1.StateWrite) error {
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
