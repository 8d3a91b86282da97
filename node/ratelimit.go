package node

import (
	"container/heap"
	"container/list"
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/time/rate"

	"github.com/verbund/verbund/federation/peertls"
	"github.com/verbund/verbund/node/auth"
	"github.com/verbund/verbund/proto/gen/verbund/federation/v1/federationv1connect"
	"github.com/verbund/verbund/proto/gen/verbund/node/v1/nodev1connect"
	"github.com/verbund/verbund/proto/gen/verbund/registry/v1/registryv1connect"
)

// Rate limits: every request on the public listener spends a token from
// the bucket of its caller for its class (query, write, sign-in); a caller
// whose bucket is empty is refused with Connect ResourceExhausted (HTTP 429
// outside Connect/gRPC), with Retry-After saying when the next token is
// due. The refusal happens before anything else is done for the request
// (no parsing, no signature or token check), so a flood costs the node
// little more than reading and refusing it.
//
// Callers:
//
//   - anonymous callers by source address (r.RemoteAddr; X-Forwarded-For
//     and Forwarded are ignored: a proxy in front of the node shares one
//     budget unless it authenticates its users). IPv4 per address, IPv6 per
//     /64 (one customer's prefix);
//   - authenticated callers (a person's token or client certificate, see
//     limitKeyer) per identity, with IdentityFactor times the anonymous
//     budgets;
//   - other nodes on the peer listener per node id (from the verified
//     client certificate), one budget for everything (RateLimits.Peer):
//     forwarded writes, read index, the change feed, handover deliveries.
//
// The admin listener is not limited (operators on this machine).
//
// Refusals are paced: a refused request gets its answer only after the
// wait until its caller's next token (at most RateLimits.MaxRefusalDelay,
// 1 s by default), like nginx's limit_req queues excess requests. A client
// that ignores Retry-After and loops gets one refusal per token interval
// instead of thousands a second, so a flood from a few hundred addresses
// costs the node about twice what its budgets admit, not all its CPU.
// Paced refusals hold a goroutine each, no CPU; at most MaxDelayedRefusals
// are held at once, beyond that refusals are immediate.
//
// Fair share: budgets per address alone cannot keep a flood from many
// addresses from filling the node's CPU (200 addresses within their
// budgets are still 200 callers). So admitted queries (not the change
// feed's streams, not writes, which wait for Raft) also need one of
// MaxConcurrentQueries slots; when all are busy they wait, and a free
// slot goes to the waiting caller with the most tokens left in its bucket
// (the one that asked least lately), not the one that asked first. A
// well-behaved client overtakes a queue of flooders; at most
// MaxQueuedQueries wait, beyond that the request is refused like one over
// its budget.
//
// Streams: change feed streams (WatchService.Watch) are long-lived and
// cost the node memory and a goroutine each, so besides the query token
// that opens one, each needs a stream slot: at most
// RateLimits.MaxStreamsPerCaller open per caller (the same caller key as
// the budgets: person, node or source address) and MaxStreams per node on
// the public listener (other nodes' streams on the peer listener, members
// following this server, count per node id only: a server may feed
// thousands of members, and they are the network's own nodes).
// A stream over either cap is refused at once with ResourceExhausted
// (HTTP 429) naming the cap; its slot is freed when the stream ends. A
// stream that has to start with a snapshot of the whole state (from
// index 0 or too far behind) also needs one of MaxSnapshotTransfers
// snapshot slots of the node (at most MaxSnapshotTransfersPerCaller per
// caller): it waits up to SnapshotWait for one, then is refused the same
// way (api_watch.go). A stream whose client stops reading is cut once a
// message has waited WatchWriteTimeout to be written (api_watch.go).
//
// Memory: each class keeps at most RateLimits.MaxTracked callers, least
// recently seen first out. An evicted caller starts again with a full
// bucket, which is what it would have had after being idle for
// burst/rate seconds; 10^5 distinct addresses cost a bounded table, not a
// growing one.

// limitClass is the budget a request draws from.
type limitClass uint8

const (
	classQuery  limitClass = iota // reads: queries, status, the change feed, pages
	classWrite                    // signed writes, case steps, key and user management
	classSignIn                   // password sign-in: the guessing surface, tight
	classPeer                     // calls from other nodes on the peer listener
	numClasses
)

func (c limitClass) String() string {
	return [...]string{"query", "write", "sign_in", "peer"}[c]
}

// writeProcedures are the procedures that change state or make the node
// sign (everything else on the public listener is a query).
var writeProcedures = map[string]bool{
	nodev1connect.NodeServiceRotateKeysProcedure:                true,
	nodev1connect.NodeServiceRevokeKeyProcedure:                 true,
	nodev1connect.AuthServiceCreateUserProcedure:                true,
	nodev1connect.AuthServiceUpdateUserProcedure:                true,
	nodev1connect.AuthServiceResetPasswordProcedure:             true,
	nodev1connect.ClusterServiceTransferLeadershipProcedure:     true,
	nodev1connect.ClusterServiceRotateGossipKeyProcedure:        true,
	federationv1connect.HandoverServiceSendHandoverProcedure:    true,
	federationv1connect.HandoverServiceDeliverHandoverProcedure: true,
	federationv1connect.HandoverServiceDeliverEventProcedure:    true,
	federationv1connect.HandoverServiceAcceptCaseProcedure:      true,
	federationv1connect.HandoverServiceRejectCaseProcedure:      true,
	federationv1connect.HandoverServiceCompleteCaseProcedure:    true,
	federationv1connect.HandoverServiceForwardCaseProcedure:     true,
}

// classOf says which budget a request on the public listener draws from.
func classOf(path string) limitClass {
	switch {
	case path == nodev1connect.AuthServiceSignInProcedure:
		return classSignIn
	case writeProcedures[path],
		hasServicePrefix(path, registryv1connect.PublishServiceName),
		hasServicePrefix(path, nodev1connect.ConsoleServiceName):
		return classWrite
	}
	return classQuery
}

func hasServicePrefix(path, svc string) bool {
	p := service(svc)
	return len(path) > len(p) && path[:len(p)] == p
}

// limitKey names the caller whose budget a request on the public listener
// spends: a signed-in person (authed, IdentityFactor times the budgets),
// else the anonymous source address. A credential that did not verify
// leaves the caller anonymous.
func limitKey(id auth.Identity, r *http.Request) (key string, authed bool) {
	if id.Kind == auth.Person || id.Kind == auth.OperatorAdmin {
		return id.LimitKey()
	}
	return sourceKey(r.RemoteAddr), false
}

// sourceKey is the bucket of a remote address: the IPv4 address, or the
// IPv6 /64 prefix (one site's or customer's block: a caller with a /64
// must not get 2^64 budgets). An address that does not parse is its own
// key.
func sourceKey(remoteAddr string) string {
	ap, err := netip.ParseAddrPort(remoteAddr)
	if err != nil {
		return "addr:" + remoteAddr
	}
	a := ap.Addr().Unmap()
	if a.Is4() {
		return "ip:" + a.String()
	}
	p, _ := a.Prefix(64)
	return "ip6:" + p.String()
}

// rateLimiter holds the per-caller buckets of one node.
type rateLimiter struct {
	cfg    RateLimits
	now    func() time.Time
	tables [numClasses]*limiterTable // anonymous callers and peers
	authed [numClasses]*limiterTable // authenticated identities
	m      *metrics                  // may be nil

	delayed atomic.Int64 // refusals being paced now
	queries *fairQueue   // slots for admitted queries
	streams *slotTable   // open change feed streams (public listener)
	peerStr *slotTable   // open change feed streams of other nodes (peer listener)
	snaps   *slotTable   // snapshot transfers in progress
}

func newRateLimiter(cfg RateLimits, m *metrics) *rateLimiter {
	rl := &rateLimiter{cfg: cfg, now: time.Now, m: m,
		queries: newFairQueue(cfg.MaxConcurrentQueries, cfg.MaxQueuedQueries),
		streams: newSlotTable(cfg.MaxStreamsPerCaller, cfg.MaxStreams),
		peerStr: newSlotTable(cfg.MaxStreamsPerCaller, math.MaxInt),
		snaps:   newSlotTable(cfg.MaxSnapshotTransfersPerCaller, cfg.MaxSnapshotTransfers)}
	budgets := [numClasses]Budget{cfg.Query, cfg.Write, cfg.SignIn, cfg.Peer}
	for c, b := range budgets {
		rl.tables[c] = newLimiterTable(b, cfg.MaxTracked)
		ab := Budget{PerSecond: b.PerSecond * cfg.IdentityFactor, Burst: int(math.Ceil(float64(b.Burst) * cfg.IdentityFactor))}
		rl.authed[c] = newLimiterTable(ab, cfg.MaxTracked)
	}
	return rl
}

// admit spends one token of r's caller on listener l and, for a query,
// waits for a fair share of the node; the caller must call done when the
// request is served. If the caller is over its budget (or too many queries
// wait), admit writes the refusal (ResourceExhausted / 429 with
// Retry-After) and returns ok false. A nil limiter (limits off) admits
// everything. Health checks are not limited, nor are the pages' static
// assets and the API calls a page makes in-process for a page view that
// was admitted (pages.go).
func (rl *rateLimiter) admit(l listener, id auth.Identity, w http.ResponseWriter, r *http.Request) (done func(), ok bool) {
	if rl == nil || l == adminListener || isHealthPath(r.URL.Path) || isPageAsset(r) {
		return noop, true
	}
	var (
		key    string
		authed bool
		class  limitClass
	)
	if l == peerListener {
		class = classPeer
		if r.TLS == nil {
			return noop, true // the access policy refuses it
		}
		id, err := peertls.PeerNodeID(*r.TLS)
		if err != nil {
			return noop, true // likewise
		}
		key = "node:" + id
	} else {
		class = classOf(r.URL.Path)
		key, authed = limitKey(id, r)
	}
	t := rl.tables[class]
	if authed {
		t = rl.authed[class]
	}
	now := rl.now()
	wait, left := t.take(key, now)
	if wait == 0 && isStream(r.URL.Path) {
		slots := rl.streams
		if l == peerListener {
			slots = rl.peerStr
		}
		release, err := slots.acquire(key)
		if err != nil {
			rl.m.rateLimited(l, class)
			refuseExhausted(w, r, fmt.Sprintf("watch streams: %v", err))
			return noop, false
		}
		return release, true
	}
	if wait == 0 && class != classQuery {
		return noop, true
	}
	if wait == 0 {
		switch err := rl.queries.acquire(r.Context(), left); {
		case err == nil:
			return rl.queries.release, true
		case err == errQueueFull:
			wait = time.Second / time.Duration(max(1, int(t.limit)))
		default:
			// Cancelled while waiting: nobody reads the answer.
			return noop, false
		}
	}
	rl.m.rateLimited(l, class)
	rl.pace(r, wait)
	refuseRateLimited(w, r, class, wait)
	return noop, false
}

func noop() {}

// isStream reports whether path is a long-lived stream (the change feed),
// which takes no query slot.
func isStream(path string) bool {
	return hasServicePrefix(path, registryv1connect.WatchServiceName)
}

// pace holds a refusal for wait (at most MaxRefusalDelay) while fewer than
// MaxDelayedRefusals are held, or until the request is cancelled.
func (rl *rateLimiter) pace(r *http.Request, wait time.Duration) {
	if rl.cfg.MaxRefusalDelay <= 0 {
		return
	}
	// Spread the held refusals over [wait, 2·wait): callers refused at the
	// same moment must not all come back at the same moment.
	d := min(wait+rand.N(wait), rl.cfg.MaxRefusalDelay)
	defer rl.delayed.Add(-1)
	if rl.delayed.Add(1) > int64(rl.cfg.MaxDelayedRefusals) {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-r.Context().Done():
	}
}

// refuseRateLimited answers a request over its budget: Connect
// ResourceExhausted for Connect, gRPC and gRPC-Web requests, HTTP 429
// otherwise, both with Retry-After in whole seconds (at least 1).
func refuseRateLimited(w http.ResponseWriter, r *http.Request, class limitClass, wait time.Duration) {
	secs := max(int64(math.Ceil(wait.Seconds())), 1)
	w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
	msg := fmt.Sprintf("rate limit: too many %s requests from this caller; retry after %ds", class, secs)
	ew := connect.NewErrorWriter()
	if ew.IsSupported(r) {
		_ = ew.Write(w, r, connect.NewError(connect.CodeResourceExhausted, fmt.Errorf("%s", msg)))
		return
	}
	http.Error(w, msg, http.StatusTooManyRequests)
}

// refuseExhausted refuses a request over a concurrency cap (not a rate):
// ResourceExhausted (429 outside Connect) at once, with Retry-After 1.
func refuseExhausted(w http.ResponseWriter, r *http.Request, msg string) {
	w.Header().Set("Retry-After", "1")
	ew := connect.NewErrorWriter()
	if ew.IsSupported(r) {
		_ = ew.Write(w, r, connect.NewError(connect.CodeResourceExhausted, errors.New(msg)))
		return
	}
	http.Error(w, msg, http.StatusTooManyRequests)
}

// errCapPerCaller and errCapPerNode: a concurrency cap refused a slot.
var (
	errCapPerCaller = errors.New("this caller has too many open")
	errCapPerNode   = errors.New("this node serves as many as it allows")
)

// slotTable counts what each caller holds open, at most perCaller each
// and total in all.
type slotTable struct {
	perCaller, total int

	mu    sync.Mutex
	held  map[string]int
	inUse int
	freed chan struct{} // closed (and replaced) when a slot is released
}

func newSlotTable(perCaller, total int) *slotTable {
	return &slotTable{perCaller: perCaller, total: total, held: make(map[string]int), freed: make(chan struct{})}
}

// acquire takes a slot for key, or says which cap refused it. release
// must be called exactly once.
func (t *slotTable) acquire(key string) (release func(), err error) {
	rel, _, err := t.tryAcquire(key)
	return rel, err
}

// tryAcquire is acquire that also returns a channel closed at the next
// release (to wait on after a refusal).
func (t *slotTable) tryAcquire(key string) (release func(), freed <-chan struct{}, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch {
	case t.held[key] >= t.perCaller:
		return nil, t.freed, fmt.Errorf("%w (%d, at most %d per caller); close some or retry later", errCapPerCaller, t.held[key], t.perCaller)
	case t.inUse >= t.total:
		return nil, t.freed, fmt.Errorf("%w (%d); retry later or use another node", errCapPerNode, t.total)
	}
	t.held[key]++
	t.inUse++
	var once sync.Once
	return func() {
		once.Do(func() {
			t.mu.Lock()
			defer t.mu.Unlock()
			t.inUse--
			if t.held[key]--; t.held[key] <= 0 {
				delete(t.held, key)
			}
			close(t.freed)
			t.freed = make(chan struct{})
		})
	}, nil, nil
}

// open is the number of slots held.
func (t *slotTable) open() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.inUse
}

// acquireSnapshot takes a snapshot transfer slot for the caller key:
// refused at once over the per-caller cap, else waits up to
// SnapshotWait for one of the node's. A nil limiter admits everything.
func (rl *rateLimiter) acquireSnapshot(ctx context.Context, key string) (release func(), err error) {
	if rl == nil {
		return noop, nil
	}
	deadline := time.NewTimer(rl.cfg.SnapshotWait)
	defer deadline.Stop()
	for {
		rel, freed, err := rl.snaps.tryAcquire(key)
		if err == nil {
			return rel, nil
		}
		if errors.Is(err, errCapPerCaller) {
			return nil, fmt.Errorf("snapshot transfers: %w", err)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-deadline.C:
			return nil, fmt.Errorf("snapshot transfers: %w; waited %v", err, rl.cfg.SnapshotWait)
		case <-freed:
		}
	}
}

// streamKey is the caller key a change feed stream was admitted under
// (the same as admit's), from the identity the guard established.
func streamKey(id auth.Identity) string {
	switch id.Kind {
	case auth.Person, auth.OperatorAdmin, auth.PeerNode:
		k, _ := id.LimitKey()
		return k
	}
	return sourceKey(id.Addr)
}

// limiterTable is one class's buckets, keyed by caller, at most max of
// them (least recently used evicted first).
type limiterTable struct {
	limit rate.Limit
	burst int
	max   int

	mu    sync.Mutex
	items map[string]*list.Element // of *tableEntry
	order list.List                // front: most recently used
}

type tableEntry struct {
	key string
	lim *rate.Limiter
}

func newLimiterTable(b Budget, maxTracked int) *limiterTable {
	t := &limiterTable{limit: rate.Limit(b.PerSecond), burst: b.Burst, max: maxTracked, items: make(map[string]*list.Element)}
	t.order.Init()
	return t
}

// take spends one token of key's bucket at now. It returns wait 0 and the
// tokens left if the request may go ahead, else how long until a token is
// due (the token is not spent: a refused request costs the caller nothing
// further).
func (t *limiterTable) take(key string, now time.Time) (wait time.Duration, left float64) {
	t.mu.Lock()
	el, ok := t.items[key]
	if ok {
		t.order.MoveToFront(el)
	} else {
		for t.order.Len() >= t.max {
			old := t.order.Back()
			t.order.Remove(old)
			delete(t.items, old.Value.(*tableEntry).key)
		}
		el = t.order.PushFront(&tableEntry{key: key, lim: rate.NewLimiter(t.limit, t.burst)})
		t.items[key] = el
	}
	lim := el.Value.(*tableEntry).lim
	t.mu.Unlock()

	res := lim.ReserveN(now, 1)
	if !res.OK() {
		return time.Hour, 0 // burst 0: never
	}
	if d := res.DelayFrom(now); d > 0 {
		res.CancelAt(now)
		return d, 0
	}
	return 0, lim.TokensAt(now)
}

// len is the number of callers tracked.
func (t *limiterTable) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.order.Len()
}

// tracked is the number of callers tracked across all classes.
func (rl *rateLimiter) tracked() int {
	if rl == nil {
		return 0
	}
	n := 0
	for c := range numClasses {
		n += rl.tables[c].len() + rl.authed[c].len()
	}
	return n
}

// errQueueFull: too many queries wait for a slot.
var errQueueFull = errors.New("query queue full")

// fairQueue hands out a fixed number of slots; waiters are served by
// priority (highest first), then in arrival order.
type fairQueue struct {
	mu      sync.Mutex
	free    int
	max     int // waiters
	seq     uint64
	waiting waitHeap
}

func newFairQueue(slots, maxWaiting int) *fairQueue {
	return &fairQueue{free: slots, max: maxWaiting}
}

type waiter struct {
	prio  float64
	seq   uint64
	ready chan struct{}
	index int // in waiting; -1 once granted
}

// acquire takes a slot, waiting (by priority) while none is free. It
// returns errQueueFull if too many wait, or ctx's error if ctx ends first.
func (q *fairQueue) acquire(ctx context.Context, prio float64) error {
	q.mu.Lock()
	if q.free > 0 && len(q.waiting) == 0 {
		q.free--
		q.mu.Unlock()
		return nil
	}
	if len(q.waiting) >= q.max {
		q.mu.Unlock()
		return errQueueFull
	}
	w := &waiter{prio: prio, seq: q.seq, ready: make(chan struct{})}
	q.seq++
	heap.Push(&q.waiting, w)
	q.mu.Unlock()
	select {
	case <-w.ready:
		return nil
	case <-ctx.Done():
		q.mu.Lock()
		if w.index >= 0 {
			heap.Remove(&q.waiting, w.index)
			q.mu.Unlock()
			return ctx.Err()
		}
		q.mu.Unlock()
		q.release() // granted meanwhile: pass it on
		return ctx.Err()
	}
}

// release returns a slot: to the best waiter, else to the pool.
func (q *fairQueue) release() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.waiting) == 0 {
		q.free++
		return
	}
	w := heap.Pop(&q.waiting).(*waiter)
	close(w.ready)
}

// waitHeap orders waiters: higher priority first, then earlier.
type waitHeap []*waiter

func (h waitHeap) Len() int { return len(h) }
func (h waitHeap) Less(i, j int) bool {
	if h[i].prio != h[j].prio {
		return h[i].prio > h[j].prio
	}
	return h[i].seq < h[j].seq
}
func (h waitHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *waitHeap) Push(x any) {
	w := x.(*waiter)
	w.index = len(*h)
	*h = append(*h, w)
}
func (h *waitHeap) Pop() any {
	old := *h
	w := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	w.index = -1
	return w
}
