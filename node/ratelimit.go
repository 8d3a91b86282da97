package node

import (
	"container/list"
	"fmt"
	"math"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/time/rate"

	"github.com/verbund/verbund/federation/peertls"
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

// limitKeyer names the caller whose budget a request spends: an identity
// (authed) or the anonymous source address. The access guard supplies the
// authenticated identity once people and clients sign in; until then
// every caller on the public listener is anonymous.
type limitKeyer interface {
	limitKey(r *http.Request) (key string, authed bool)
}

// anonymousKeyer keys every request by its source address.
type anonymousKeyer struct{}

func (anonymousKeyer) limitKey(r *http.Request) (string, bool) { return sourceKey(r.RemoteAddr), false }

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
	keyer  limitKeyer
	now    func() time.Time
	tables [numClasses]*limiterTable // anonymous callers and peers
	authed [numClasses]*limiterTable // authenticated identities
	m      *metrics                  // may be nil
}

func newRateLimiter(cfg RateLimits, m *metrics) *rateLimiter {
	rl := &rateLimiter{cfg: cfg, keyer: anonymousKeyer{}, now: time.Now, m: m}
	budgets := [numClasses]Budget{cfg.Query, cfg.Write, cfg.SignIn, cfg.Peer}
	for c, b := range budgets {
		rl.tables[c] = newLimiterTable(b, cfg.MaxTracked)
		ab := Budget{PerSecond: b.PerSecond * cfg.IdentityFactor, Burst: int(math.Ceil(float64(b.Burst) * cfg.IdentityFactor))}
		rl.authed[c] = newLimiterTable(ab, cfg.MaxTracked)
	}
	return rl
}

// admit spends one token of r's caller on listener l, or writes the
// refusal (ResourceExhausted / 429 with Retry-After) and returns false.
// A nil limiter (limits off) admits everything.
func (rl *rateLimiter) admit(l listener, w http.ResponseWriter, r *http.Request) bool {
	if rl == nil || l == adminListener {
		return true
	}
	var (
		key    string
		authed bool
		class  limitClass
	)
	if l == peerListener {
		class = classPeer
		if r.TLS == nil {
			return true // the access policy refuses it
		}
		id, err := peertls.PeerNodeID(*r.TLS)
		if err != nil {
			return true // likewise
		}
		key = "node:" + id
	} else {
		class = classOf(r.URL.Path)
		key, authed = rl.keyer.limitKey(r)
	}
	t := rl.tables[class]
	if authed {
		t = rl.authed[class]
	}
	wait := t.take(key, rl.now())
	if wait == 0 {
		return true
	}
	rl.m.rateLimited(l, class)
	refuseRateLimited(w, r, class, wait)
	return false
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

// take spends one token of key's bucket at now. It returns 0 if the
// request may go ahead, else how long until a token is due (the token is
// not spent: a refused request costs the caller nothing further).
func (t *limiterTable) take(key string, now time.Time) time.Duration {
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
		return time.Hour // burst 0: never
	}
	if d := res.DelayFrom(now); d > 0 {
		res.CancelAt(now)
		return d
	}
	return 0
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
