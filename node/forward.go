package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"time"

	"connectrpc.com/connect"
	"github.com/hashicorp/raft"

	"github.com/verbund/verbund/federation/handover"
	"github.com/verbund/verbund/federation/membership"
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

// peerClientOpts: the node's clients of other nodes compress nothing
// small (see CompressMinBytes).
var peerClientOpts = []connect.ClientOption{connect.WithCompressMinBytes(CompressMinBytes)}

func newPeerClients(hc *http.Client) *peerClients {
	return &peerClients{hc: hc, m: map[string]*peerClient{}}
}

func (p *peerClients) get(base string) *peerClient {
	p.mu.Lock()
	defer p.mu.Unlock()
	c, ok := p.m[base]
	if !ok {
		c = &peerClient{
			publish:  registryv1connect.NewPublishServiceClient(p.hc, base, peerClientOpts...),
			cluster:  nodev1connect.NewClusterServiceClient(p.hc, base, peerClientOpts...),
			watch:    registryv1connect.NewWatchServiceClient(p.hc, base, peerClientOpts...),
			handover: handoverapi.Peer{Client: federationv1connect.NewHandoverServiceClient(p.hc, base, peerClientOpts...)},
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

// forwardTarget returns the API address (and node id) to forward a
// leader-only request to: the Raft leader on a server, any live server on a
// member (which forwards on to its leader), other than avoid (a target that
// just failed) where there is a choice. A server finds the leader's address
// in gossip, or else in its peer book (the addresses last gossiped, kept
// across restarts), so a restarted node reaches the leader before gossip
// has rejoined.
func (n *Node) forwardTarget(avoid string) (addr, id string, err error) {
	if n.isServer() {
		_, lid := n.raft.LeaderWithID()
		if lid == "" {
			return "", "", fmt.Errorf("%w: no leader known", registry.ErrUnavailable)
		}
		if lid == raft.ServerID(n.cfg.NodeID) {
			if n.raft.State() == raft.Leader {
				return "", "", errBecameLeader
			}
			return "", "", fmt.Errorf("%w: leadership is changing", registry.ErrUnavailable)
		}
		if m, ok := n.memberByNodeID(string(lid)); ok && m.APIAddr != "" {
			return m.APIAddr, string(lid), nil
		}
		if a := n.book.api(string(lid)); a != "" {
			return a, string(lid), nil
		}
		// No address for the leader yet: another server that gossip knows
		// forwards on (one more hop), as for a member.
		if servers := n.liveServers(); len(servers) > 0 {
			s := servers[rand.IntN(len(servers))]
			return s.APIAddr, s.NodeID, nil
		}
		return "", "", fmt.Errorf("%w: leader %s has no known API address", registry.ErrUnavailable, lid)
	}
	servers := n.liveServers()
	if len(servers) > 1 && avoid != "" {
		kept := servers[:0:0]
		for _, s := range servers {
			if s.APIAddr != avoid {
				kept = append(kept, s)
			}
		}
		if len(kept) > 0 {
			servers = kept
		}
	}
	if len(servers) == 0 {
		return "", "", fmt.Errorf("%w: no live server known to this member", registry.ErrUnavailable)
	}
	s := servers[rand.IntN(len(servers))]
	return s.APIAddr, s.NodeID, nil
}

// forwardBackoff bounds the waits between forwarding attempts.
const (
	forwardBackoffMin = 50 * time.Millisecond
	forwardBackoffMax = time.Second
	// forwardDefaultBound bounds the retries of a request that carries no
	// deadline of its own.
	forwardDefaultBound = 10 * time.Second
)

// errBecameLeader ends forwarding: this node leads now (it was elected
// while the request waited to be forwarded), so it serves the request.
var errBecameLeader = errors.New("this node became the leader")

// errSent is a forwarded call that failed after its request may have
// reached the target (the connection broke, no answer came back).
var errSent = errors.New("sent")

// forward calls call on the current forwarding target, and again, with
// backoff, while the target cannot be reached or answers Unavailable (no
// leader there yet, or it is not the leader any more) and the request's
// deadline leaves time: right after a leader dies, the first attempts go to
// it or find no leader, the later ones to its successor. Resending a
// publication is safe: the registry recognises a command it has applied
// by its id and answers with the first result. The error returned names no
// internal address: a transport failure reads as "the leader (node n3)
// could not be reached", with errSent in its chain if the request may have
// arrived. call must return the Connect error as it is.
func (n *Node) forward(ctx context.Context, call func(ctx context.Context, target string) error) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, forwardDefaultBound)
		defer cancel()
	}
	backoff := forwardBackoffMin
	var avoid string
	var last error
	for {
		target, id, err := n.forwardTarget(avoid)
		if err != nil && !errors.Is(err, registry.ErrUnavailable) {
			return err // errBecameLeader included: the caller serves it here
		}
		if err == nil {
			err = call(ctx, target)
			if err == nil {
				return nil
			}
			if ctx.Err() != nil && !connect.IsWireError(err) {
				// Our own deadline, not the peer's answer.
				if last == nil || !errors.Is(last, errSent) {
					last = peerFailure(id, err)
				}
				return last
			}
			if connect.IsWireError(err) {
				if connect.CodeOf(err) != connect.CodeUnavailable {
					return fromPeer(err)
				}
				err = fromPeer(err)
			} else {
				err = peerFailure(id, err)
				avoid = target
			}
			n.log.Debug("forwarding failed; retrying", "target", target, "err", err)
		}
		if last == nil || !errors.Is(last, errSent) {
			// Once a request may have arrived, the outcome stays unknown
			// whatever later attempts report.
			last = err
		}
		wait := backoff/2 + rand.N(backoff/2+1)
		if dl, _ := ctx.Deadline(); time.Until(dl) < wait {
			return last
		}
		select {
		case <-ctx.Done():
			return last
		case <-time.After(wait):
		}
		backoff = min(2*backoff, forwardBackoffMax)
	}
}

// peerFailure describes a call that got no answer from node id: refused
// connections (nothing was sent) are ErrUnavailable; anything else may have
// reached it and carries errSent. The peer's address is left out (clients
// see this message).
func peerFailure(id string, err error) error {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return fmt.Errorf("%w: the leader (node %s) could not be reached", registry.ErrUnavailable, id)
	}
	return fmt.Errorf("%w: the connection to the leader (node %s) failed (%s)", errSent, id, shortCause(err))
}

// shortCause is the innermost cause of a transport error without the URL
// and addresses Go puts around it ("connection reset by peer", "EOF").
func shortCause(err error) string {
	var se syscall.Errno
	if errors.As(err, &se) {
		return se.Error()
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return "connection closed"
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return "no answer in time"
	}
	return "transport error"
}

// forwardPublish sends signed commands on towards the leader. A request
// that may have reached the leader without an answer coming back is
// ErrIndeterminate (retrying with the same command ids is safe), one that
// never left this node ErrUnavailable (nothing was applied).
func (n *Node) forwardPublish(ctx context.Context, hop int, signed []string) ([]*registryv1.CommandResult, uint64, error) {
	if hop >= maxHops {
		return nil, 0, fmt.Errorf("%w: forwarded %d times without reaching the leader", registry.ErrUnavailable, hop)
	}
	var res *connect.Response[registryv1.PublishResponse]
	err := n.forward(ctx, func(ctx context.Context, target string) error {
		req := connect.NewRequest(&registryv1.PublishRequest{SignedCommands: signed})
		req.Header().Set(hopHeader, strconv.Itoa(hop+1))
		var err error
		res, err = n.peers.get(target).publish.Publish(ctx, req)
		return err
	})
	if errors.Is(err, errBecameLeader) {
		return n.admission.Publish(ctx, signed)
	}
	if errors.Is(err, errSent) {
		return nil, 0, fmt.Errorf("%w: %v; %s", registry.ErrIndeterminate, err, connecterr.IndeterminateHint)
	}
	if errors.Is(err, registry.ErrUnavailable) && !errors.Is(err, registry.ErrIndeterminate) {
		return nil, 0, fmt.Errorf("%w; the write was not applied: retry later", err)
	}
	if err != nil {
		return nil, 0, err
	}
	return res.Msg.GetResults(), res.Msg.GetIndex(), nil
}

// forwardReadIndex asks the leader for a read index.
func (n *Node) forwardReadIndex(ctx context.Context, hop int) (uint64, error) {
	if hop >= maxHops {
		return 0, fmt.Errorf("%w: forwarded %d times without reaching the leader", registry.ErrUnavailable, hop)
	}
	var res *connect.Response[nodev1.ReadIndexResponse]
	err := n.forward(ctx, func(ctx context.Context, target string) error {
		req := connect.NewRequest(&nodev1.ReadIndexRequest{})
		req.Header().Set(hopHeader, strconv.Itoa(hop+1))
		var err error
		res, err = n.peers.get(target).cluster.ReadIndex(ctx, req)
		return err
	})
	if errors.Is(err, errBecameLeader) {
		return n.leaderReadIndex(ctx)
	}
	if errors.Is(err, errSent) {
		return 0, fmt.Errorf("%w: read index: %v", registry.ErrUnavailable, err)
	}
	if err != nil {
		return 0, fmt.Errorf("read index: %w", err)
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

// peerBookFile (in DATA_DIR) keeps the addresses of the other nodes as last
// gossiped.
const peerBookFile = "known-peers.json"

// peerBook is what this node last learnt from gossip about the other nodes
// of its network, written to DATA_DIR/known-peers.json when it changes and
// read at start: a restarted node knows the leader's API address (for
// forwarding and read index) and where to rejoin gossip before gossip has
// told it anything. It is a hint, never an authority: API calls between
// nodes are authenticated by TLS, and gossip overrides what it says.
type peerBook struct {
	path string
	log  *slog.Logger
	mu   sync.Mutex
	m    map[string]bookEntry
}

type bookEntry struct {
	API    string `json:"api,omitempty"`
	Gossip string `json:"gossip,omitempty"`
	Role   string `json:"role,omitempty"`
}

// loadPeerBook reads dataDir's peer book (empty if there is none, or no
// data dir). A damaged file is logged and ignored.
func loadPeerBook(dataDir string, log *slog.Logger) *peerBook {
	b := &peerBook{log: log, m: map[string]bookEntry{}}
	if dataDir == "" {
		return b
	}
	b.path = filepath.Join(dataDir, peerBookFile)
	data, err := os.ReadFile(b.path)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			log.Warn("peer book unreadable; starting without it", "file", b.path, "err", err)
		}
		return b
	}
	if err := json.Unmarshal(data, &b.m); err != nil {
		log.Warn("peer book damaged; starting without it", "file", b.path, "err", err)
		b.m = map[string]bookEntry{}
	}
	return b
}

// api returns node id's API address as last gossiped ("" if unknown).
func (b *peerBook) api(id string) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.m[id].API
}

// gossipSeeds returns the gossip addresses of the servers in the book
// other than self, to rejoin gossip with after a restart.
func (b *peerBook) gossipSeeds(self string) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for id, e := range b.m {
		if id != self && e.Gossip != "" && (e.Role == string(membership.RoleVoter) || e.Role == string(membership.RoleReplica)) {
			out = append(out, e.Gossip)
		}
	}
	sort.Strings(out)
	return out
}

// learn records the alive members' addresses and saves the book if it
// changed. Dead members keep their last entry (a restarted node needs
// exactly those).
func (b *peerBook) learn(ms []membership.Member) {
	b.mu.Lock()
	changed := false
	for _, m := range ms {
		if m.State != membership.StateAlive || m.NodeID == "" {
			continue
		}
		e := bookEntry{API: m.APIAddr, Gossip: m.GossipAddr, Role: string(m.Role)}
		if b.m[m.NodeID] != e {
			b.m[m.NodeID] = e
			changed = true
		}
	}
	var data []byte
	if changed && b.path != "" {
		data, _ = json.MarshalIndent(b.m, "", "  ")
	}
	b.mu.Unlock()
	if data == nil {
		return
	}
	tmp := b.path + ".tmp"
	if err := os.WriteFile(tmp, append(data, '\n'), 0o600); err != nil {
		b.log.Warn("peer book not saved", "err", err)
		return
	}
	if err := os.Rename(tmp, b.path); err != nil {
		b.log.Warn("peer book not saved", "err", err)
	}
}

// peerBookLoop keeps the peer book current with gossip.
func (n *Node) peerBookLoop(ctx context.Context) {
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		n.book.learn(n.gossip.Members())
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
