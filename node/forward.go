package node

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"

	"connectrpc.com/connect"
	"github.com/hashicorp/raft"

	"github.com/verbund/verbund/federation/handover"
	"github.com/verbund/verbund/node/connecterr"
	"github.com/verbund/verbund/node/diskspace"
	"github.com/verbund/verbund/node/handoverapi"
	"github.com/verbund/verbund/proto/gen/verbund/federation/v1/federationv1connect"
	nodev1 "github.com/verbund/verbund/proto/gen/verbund/node/v1"
	"github.com/verbund/verbund/proto/gen/verbund/node/v1/nodev1connect"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
	"github.com/verbund/verbund/proto/gen/verbund/registry/v1/registryv1connect"
	"github.com/verbund/verbund/registry"
)

// hopHeader counts how often a request was forwarded between nodes, so a
// request chasing a moving leader stops instead of looping.
const (
	hopHeader = "Verbund-Forwarded"
	maxHops   = 2
)

// peerClients is the node's one cache of Connect clients for other nodes,
// per API base URL: forwarding, read index, the change feed and handover
// deliveries all use it.
type peerClients struct {
	hc *http.Client
	mu sync.Mutex
	m  map[string]*peerClient
}

type peerClient struct {
	publish  registryv1connect.PublishServiceClient
	cluster  nodev1connect.ClusterServiceClient
	watch    registryv1connect.WatchServiceClient
	handover handoverapi.Peer
}

func newPeerClients(hc *http.Client) *peerClients {
	return &peerClients{hc: hc, m: map[string]*peerClient{}}
}

func (p *peerClients) get(base string) *peerClient {
	p.mu.Lock()
	defer p.mu.Unlock()
	c, ok := p.m[base]
	if !ok {
		c = &peerClient{
			publish:  registryv1connect.NewPublishServiceClient(p.hc, base),
			cluster:  nodev1connect.NewClusterServiceClient(p.hc, base),
			watch:    registryv1connect.NewWatchServiceClient(p.hc, base),
			handover: handoverapi.Peer{Client: federationv1connect.NewHandoverServiceClient(p.hc, base)},
		}
		p.m[base] = c
	}
	return c
}

// Peer implements handover.Dialer over the cache.
func (p *peerClients) Peer(endpoint string) handover.Peer { return p.get(endpoint).handover }

func hops(h http.Header) int {
	v, _ := strconv.Atoi(h.Get(hopHeader))
	return v
}

// forwardTarget returns the API address to forward a leader-only request
// to: the Raft leader on a server, any live server on a member (which
// forwards on to its leader).
func (n *Node) forwardTarget() (string, error) {
	if n.isServer() {
		_, id := n.raft.LeaderWithID()
		if id == "" {
			return "", fmt.Errorf("%w: no leader known", registry.ErrUnavailable)
		}
		if id == raft.ServerID(n.cfg.NodeID) {
			return "", fmt.Errorf("%w: leadership is changing", registry.ErrUnavailable)
		}
		m, ok := n.memberByNodeID(string(id))
		if !ok || m.APIAddr == "" {
			return "", fmt.Errorf("%w: leader %s has no known API address", registry.ErrUnavailable, id)
		}
		return m.APIAddr, nil
	}
	servers := n.liveServers()
	if len(servers) == 0 {
		return "", fmt.Errorf("%w: no live server known to this member", registry.ErrUnavailable)
	}
	return servers[rand.IntN(len(servers))].APIAddr, nil
}

// forwardPublish sends signed commands on towards the leader.
func (n *Node) forwardPublish(ctx context.Context, hop int, signed []string) ([]*registryv1.CommandResult, uint64, error) {
	if hop >= maxHops {
		return nil, 0, fmt.Errorf("%w: forwarded %d times without reaching the leader", registry.ErrUnavailable, hop)
	}
	target, err := n.forwardTarget()
	if err != nil {
		return nil, 0, err
	}
	req := connect.NewRequest(&registryv1.PublishRequest{SignedCommands: signed})
	req.Header().Set(hopHeader, strconv.Itoa(hop+1))
	res, err := n.peers.get(target).publish.Publish(ctx, req)
	if err != nil {
		return nil, 0, fmt.Errorf("forward to %s: %w", target, fromPeer(err))
	}
	return res.Msg.GetResults(), res.Msg.GetIndex(), nil
}

// forwardReadIndex asks the leader for a read index.
func (n *Node) forwardReadIndex(ctx context.Context, hop int) (uint64, error) {
	if hop >= maxHops {
		return 0, fmt.Errorf("%w: forwarded %d times without reaching the leader", registry.ErrUnavailable, hop)
	}
	target, err := n.forwardTarget()
	if err != nil {
		return 0, err
	}
	req := connect.NewRequest(&nodev1.ReadIndexRequest{})
	req.Header().Set(hopHeader, strconv.Itoa(hop+1))
	res, err := n.peers.get(target).cluster.ReadIndex(ctx, req)
	if err != nil {
		return 0, fmt.Errorf("read index from %s: %w", target, fromPeer(err))
	}
	return res.Msg.GetIndex(), nil
}

// fromPeer gives a forwarded call's Connect error the registry sentinel its
// code stands for (connecterr.Code in reverse), so an in-process caller of
// Publish sees the same errors whether its call was proposed here or
// forwarded: Unknown (the peer's ErrIndeterminate, or an answer lost on the
// way) is ErrIndeterminate, Unavailable is ErrUnavailable, a leader
// refusing for lack of disk space is peerDiskFull. The Connect error stays
// in the chain, so API clients see the peer's code unchanged (a full disk:
// the same code and mark, and the leader's message naming its data dir).
func fromPeer(err error) error {
	var ce *connect.Error
	if connecterr.IsDiskFull(err) && errors.As(err, &ce) {
		return peerDiskFull{msg: ce.Message()}
	}
	switch connect.CodeOf(err) {
	case connect.CodeUnknown:
		return fmt.Errorf("%w: %w", registry.ErrIndeterminate, err)
	case connect.CodeUnavailable:
		return fmt.Errorf("%w: %w", registry.ErrUnavailable, err)
	}
	return err
}

// peerDiskFull is a leader's refusal for lack of disk space, received by a
// node that forwarded the write: it matches diskspace.ErrDiskFull and reads
// as the leader's message. It does not keep the received Connect error,
// whose metadata (the disk-full mark) connect-go does not pass on: the
// forwarding node's edge marks it again (connecterr.ToConnect).
type peerDiskFull struct{ msg string }

func (e peerDiskFull) Error() string        { return e.msg }
func (e peerDiskFull) Is(target error) bool { return target == diskspace.ErrDiskFull }
