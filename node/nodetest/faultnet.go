package nodetest

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// ErrBlocked is what a blocked RPC or request fails with.
var ErrBlocked = errors.New("nodetest: link blocked by fault injection")

// ErrReplyLost is what a node-to-node request fails with when its reply is
// lost: the callee did the work, the caller never hears of it.
var ErrReplyLost = errors.New("nodetest: reply lost by fault injection")

// Net is the fault-injecting network between the nodes of a Cluster. Links
// are directional (i -> j), so partitions can be symmetric, one-way, or
// bridges. Drops and delays come from a seeded source, so a run replays.
type Net struct {
	mu       sync.RWMutex
	blocked  map[[2]int]bool
	dropRate float64
	maxDelay time.Duration
	rng      *rand.Rand

	raftAddr map[raft.ServerAddress]int
	apiHost  map[string]int
	blockedN uint64

	replyLoss   float64
	lossPaths   map[string]bool
	repliesLost uint64
}

func newNet(seed uint64) *Net {
	return &Net{
		blocked:  map[[2]int]bool{},
		rng:      rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		raftAddr: map[raft.ServerAddress]int{},
		apiHost:  map[string]int{},
	}
}

func (n *Net) register(i int, raftAddr, apiHost string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.raftAddr[raft.ServerAddress(raftAddr)] = i
	n.apiHost[apiHost] = i
}

// Block cuts the link from i to j (one way).
func (n *Net) Block(i, j int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.blocked[[2]int{i, j}] = true
}

// HealAll restores every link and stops drops, delays and reply losses.
func (n *Net) HealAll() {
	n.mu.Lock()
	defer n.mu.Unlock()
	clear(n.blocked)
	n.dropRate, n.maxDelay = 0, 0
	n.replyLoss, n.lossPaths = 0, nil
}

// SetReplyLoss makes node-to-node HTTP requests for the given URL paths
// (Connect procedures, such as federationv1connect's
// HandoverServiceDeliverHandoverProcedure) lose a fraction of their
// replies: the callee has answered, so whatever it committed stays, and the
// caller gets ErrReplyLost. This is the fault that makes a sender deliver
// again what the recipient already holds (its dedupe at work). Rate 0
// stops it.
func (n *Net) SetReplyLoss(rate float64, paths ...string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.replyLoss, n.lossPaths = rate, map[string]bool{}
	for _, p := range paths {
		n.lossPaths[p] = true
	}
}

// RepliesLost is how many replies SetReplyLoss dropped so far.
func (n *Net) RepliesLost() uint64 {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.repliesLost
}

// loseReply decides whether the reply to a request for path is lost.
func (n *Net) loseReply(path string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.replyLoss <= 0 || !n.lossPaths[path] || n.rng.Float64() >= n.replyLoss {
		return false
	}
	n.repliesLost++
	return true
}

// SetFlaky makes every link drop a fraction of messages and delay the rest
// by up to maxDelay.
func (n *Net) SetFlaky(dropRate float64, maxDelay time.Duration) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.dropRate, n.maxDelay = dropRate, maxDelay
}

// check decides the fate of one message from i to j.
func (n *Net) check(i, j int) error {
	n.mu.Lock()
	blocked := n.blocked[[2]int{i, j}]
	drop := n.dropRate > 0 && n.rng.Float64() < n.dropRate
	var delay time.Duration
	if n.maxDelay > 0 {
		delay = time.Duration(n.rng.Int64N(int64(n.maxDelay)))
	}
	if blocked || drop {
		n.blockedN++
	}
	n.mu.Unlock()
	if blocked || drop {
		return fmt.Errorf("%w (%d -> %d)", ErrBlocked, i, j)
	}
	if delay > 0 {
		time.Sleep(delay)
	}
	return nil
}

// Dropped is how many messages were blocked or dropped so far.
func (n *Net) Dropped() uint64 {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.blockedN
}

func (n *Net) raftTarget(a raft.ServerAddress) (int, bool) {
	n.mu.RLock()
	defer n.mu.RUnlock()
	i, ok := n.raftAddr[a]
	return i, ok
}

func (n *Net) apiTarget(host string) (int, bool) {
	n.mu.RLock()
	defer n.mu.RUnlock()
	i, ok := n.apiHost[host]
	return i, ok
}

// raftTransport wraps a node's Raft transport and consults the Net before
// every outgoing RPC: AppendEntries, RequestVote, RequestPreVote (which a
// fault transport must carry, or elections never finish with pre-vote on),
// InstallSnapshot and TimeoutNow. Pipelining is disabled so every append
// is checked.
type raftTransport struct {
	inner raft.Transport
	net   *Net
	self  int
}

var (
	_ raft.Transport   = (*raftTransport)(nil)
	_ raft.WithPreVote = (*raftTransport)(nil)
	_ raft.WithClose   = (*raftTransport)(nil)
)

func (t *raftTransport) check(target raft.ServerAddress) error {
	j, ok := t.net.raftTarget(target)
	if !ok {
		return nil
	}
	return t.net.check(t.self, j)
}

func (t *raftTransport) Consumer() <-chan raft.RPC     { return t.inner.Consumer() }
func (t *raftTransport) LocalAddr() raft.ServerAddress { return t.inner.LocalAddr() }
func (t *raftTransport) EncodePeer(id raft.ServerID, a raft.ServerAddress) []byte {
	return t.inner.EncodePeer(id, a)
}
func (t *raftTransport) DecodePeer(b []byte) raft.ServerAddress { return t.inner.DecodePeer(b) }
func (t *raftTransport) SetHeartbeatHandler(cb func(rpc raft.RPC)) {
	t.inner.SetHeartbeatHandler(cb)
}

func (t *raftTransport) AppendEntriesPipeline(raft.ServerID, raft.ServerAddress) (raft.AppendPipeline, error) {
	return nil, raft.ErrPipelineReplicationNotSupported
}

func (t *raftTransport) AppendEntries(id raft.ServerID, target raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	if err := t.check(target); err != nil {
		return err
	}
	return t.inner.AppendEntries(id, target, args, resp)
}

func (t *raftTransport) RequestVote(id raft.ServerID, target raft.ServerAddress, args *raft.RequestVoteRequest, resp *raft.RequestVoteResponse) error {
	if err := t.check(target); err != nil {
		return err
	}
	return t.inner.RequestVote(id, target, args, resp)
}

func (t *raftTransport) RequestPreVote(id raft.ServerID, target raft.ServerAddress, args *raft.RequestPreVoteRequest, resp *raft.RequestPreVoteResponse) error {
	if err := t.check(target); err != nil {
		return err
	}
	pv, ok := t.inner.(raft.WithPreVote)
	if !ok {
		return errors.New("nodetest: inner transport has no pre-vote")
	}
	return pv.RequestPreVote(id, target, args, resp)
}

func (t *raftTransport) InstallSnapshot(id raft.ServerID, target raft.ServerAddress, args *raft.InstallSnapshotRequest, resp *raft.InstallSnapshotResponse, data io.Reader) error {
	if err := t.check(target); err != nil {
		return err
	}
	return t.inner.InstallSnapshot(id, target, args, resp, data)
}

func (t *raftTransport) TimeoutNow(id raft.ServerID, target raft.ServerAddress, args *raft.TimeoutNowRequest, resp *raft.TimeoutNowResponse) error {
	if err := t.check(target); err != nil {
		return err
	}
	return t.inner.TimeoutNow(id, target, args, resp)
}

func (t *raftTransport) Close() error {
	if c, ok := t.inner.(raft.WithClose); ok {
		return c.Close()
	}
	return nil
}

// roundTripper blocks node-to-node HTTP (forwarding, read index, feed).
type roundTripper struct {
	inner http.RoundTripper
	net   *Net
	self  int
}

func (r *roundTripper) RoundTrip(req *http.Request) (*http.Response, error) {
	j, ok := r.net.apiTarget(req.URL.Host)
	if !ok {
		return r.inner.RoundTrip(req)
	}
	if err := r.net.check(r.self, j); err != nil {
		return nil, err
	}
	resp, err := r.inner.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	if r.net.loseReply(req.URL.Path) {
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		return nil, fmt.Errorf("%w (%d -> %d): %s", ErrReplyLost, j, r.self, req.URL.Path)
	}
	// Established streams (the change feed) break when the link is cut.
	resp.Body = &cutBody{ReadCloser: resp.Body, net: r.net, from: j, to: r.self}
	return resp, nil
}

type cutBody struct {
	io.ReadCloser
	net      *Net
	from, to int
}

func (b *cutBody) Read(p []byte) (int, error) {
	if err := b.cut(); err != nil {
		return 0, err
	}
	n, err := b.ReadCloser.Read(p)
	// A read already waiting when the link was cut must not deliver what
	// arrived after the cut: that data is lost with the link.
	if err := b.cut(); err != nil {
		return 0, err
	}
	return n, err
}

func (b *cutBody) cut() error {
	b.net.mu.RLock()
	blocked := b.net.blocked[[2]int{b.from, b.to}]
	b.net.mu.RUnlock()
	if blocked {
		return fmt.Errorf("%w (%d -> %d): connection cut", ErrBlocked, b.from, b.to)
	}
	return nil
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}
