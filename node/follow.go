package node

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"connectrpc.com/connect"

	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
)

// A member follows a server's change feed (api_watch.go serves it).
const (
	followRetryMin    = 100 * time.Millisecond
	followRetryMax    = 2 * time.Second
	followStaleWindow = 3 * feedHeartbeat
)

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
		n.log.Warn("change feed interrupted; switching server", "server", s.NodeID, "err", err, "applied", n.feedCopy.AppliedIndex())
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
		AfterIndex: n.feedCopy.AppliedIndex(), IncludeStateWrites: true, OmitValues: true,
	}))
	if err != nil {
		return err
	}
	defer stream.Close()
	for stream.Receive() {
		watchdog.Reset(followStaleWindow)
		m := stream.Msg()
		if err := n.feedCopy.Apply(m); err != nil {
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
