package node

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"connectrpc.com/connect"

	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
	"github.com/verbund/verbund/registry"
)

const (
	feedBatch         = 256
	snapshotChunk     = 2000
	feedHeartbeat     = time.Second
	followRetryMin    = 100 * time.Millisecond
	followRetryMax    = 2 * time.Second
	followStaleWindow = 3 * feedHeartbeat
)

// Watch streams the change feed (servers only; a member's copy has no feed).
func (a *apiServer) Watch(ctx context.Context, req *connect.Request[registryv1.WatchRequest], stream *connect.ServerStream[registryv1.WatchResponse]) error {
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

// followLoop keeps a member's read copy current from a server's feed,
// moving to another server when one fails (avoiding the one that just did).
func (n *Node) followLoop(ctx context.Context) {
	backoff := followRetryMin
	lastFailed := ""
	for ctx.Err() == nil {
		servers := n.liveServers()
		if len(servers) > 1 && lastFailed != "" {
			for i, s := range servers {
				if s.NodeID == lastFailed {
					servers = append(servers[:i], servers[i+1:]...)
					break
				}
			}
		}
		if len(servers) == 0 {
			sleep(ctx, backoff)
			backoff = min(backoff*2, followRetryMax)
			continue
		}
		s := servers[rand.IntN(len(servers))]
		start := time.Now()
		err := n.follow(ctx, s.APIAddr)
		if ctx.Err() != nil {
			return
		}
		if time.Since(start) > followStaleWindow {
			backoff = followRetryMin // it worked for a while
		}
		lastFailed = s.NodeID
		n.log.Warn("change feed interrupted; switching server", "server", s.NodeID, "err", err, "applied", n.replica.AppliedIndex())
		sleep(ctx, backoff/2+time.Duration(rand.Int64N(int64(backoff))))
		backoff = min(backoff*2, followRetryMax)
	}
}

func (n *Node) follow(ctx context.Context, api string) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// A stream that goes quiet (no heartbeat) is dead: cancel it. Armed
	// before the call, which waits for the server's first message.
	watchdog := time.AfterFunc(followStaleWindow, cancel)
	defer watchdog.Stop()
	stream, err := n.peers.get(api).watch.Watch(ctx, connect.NewRequest(&registryv1.WatchRequest{
		AfterIndex: n.replica.AppliedIndex(), IncludeStateWrites: true, OmitValues: true,
	}))
	if err != nil {
		return err
	}
	defer stream.Close()
	for stream.Receive() {
		watchdog.Reset(followStaleWindow)
		m := stream.Msg()
		if err := n.replica.Apply(m); err != nil {
			return err
		}
		n.lastFeed.Store(time.Now().UnixMilli())
	}
	if err := stream.Err(); err != nil {
		return err
	}
	return fmt.Errorf("stream from %s ended", api)
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
