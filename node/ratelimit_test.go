package node

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/verbund/verbund/federation/peertls"
	"github.com/verbund/verbund/proto/gen/verbund/node/v1/nodev1connect"
	"github.com/verbund/verbund/proto/gen/verbund/registry/v1/registryv1connect"
)

// fakeClock is a settable clock for the limiter.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }

// limitedNode starts a node whose limiter has the given budgets and a
// clock the test moves.
func limitedNode(t *testing.T, lim RateLimits) (*Node, *fakeClock) {
	t.Helper()
	cfg := testConfig(t, t.TempDir())
	if lim.MaxRefusalDelay == 0 {
		lim.MaxRefusalDelay = -1 // refusals at once: the fake clock's waits are not real
	}
	cfg.RateLimits = lim.withDefaults()
	cfg.AdminAddr = "127.0.0.1:0"
	n := startNode(t, cfg)
	clk := &fakeClock{t: time.Unix(1_800_000_000, 0)}
	n.limiter.Load().now = clk.now
	return n, clk
}

// call sends one request through the guard of listener l as it would
// arrive from addr (with tls, if set) and returns the recorded answer.
func call(n *Node, l listener, path, addr string, cs *tls.ConnectionState, header ...string) *httptest.ResponseRecorder {
	method, body := http.MethodPost, "{}"
	if !strings.HasPrefix(path, "/verbund.") {
		method, body = http.MethodGet, ""
	}
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	if method == http.MethodPost {
		req.Header.Set("Content-Type", "application/json") // Connect unary JSON
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	req.RemoteAddr, req.TLS = addr, cs
	rec := httptest.NewRecorder()
	n.guard(l, n.routes()).ServeHTTP(rec, req)
	return rec
}

func limited(rec *httptest.ResponseRecorder) bool {
	return rec.Header().Get("Retry-After") != "" &&
		(rec.Code == http.StatusTooManyRequests || strings.Contains(rec.Body.String(), "resource_exhausted"))
}

// TestRateLimitGuard: the guard refuses a caller over its budget with
// Connect ResourceExhausted (HTTP 429 for pages) and Retry-After, per
// source address (proxy headers ignored), per class, and admits it again
// once tokens are due; the refusals are counted on /metrics.
func TestRateLimitGuard(t *testing.T) {
	n, clk := limitedNode(t, RateLimits{
		Query:  Budget{PerSecond: 1, Burst: 3},
		Write:  Budget{PerSecond: 1, Burst: 2},
		SignIn: Budget{PerSecond: 0.1, Burst: 1},
	})
	const a, b = "127.0.0.1:40000", "127.0.0.2:40001"
	find := registryv1connect.QueryServiceFindProvidersProcedure
	for i := range 3 {
		if rec := call(n, publicListener, find, a, nil); limited(rec) {
			t.Fatalf("query %d within the burst refused: %d %s", i, rec.Code, rec.Body)
		}
	}
	rec := call(n, publicListener, find, a, nil)
	if !limited(rec) || rec.Code != http.StatusTooManyRequests || rec.Header().Get("Retry-After") != "1" {
		t.Fatalf("4th query: HTTP %d Retry-After %q %s; want resource_exhausted (429) with Retry-After 1", rec.Code, rec.Header().Get("Retry-After"), rec.Body)
	}
	if !strings.Contains(rec.Body.String(), "resource_exhausted") {
		t.Fatalf("Connect request not refused with resource_exhausted: %s", rec.Body)
	}
	// A page (not Connect): plain 429.
	if rec := call(n, publicListener, "/", a, nil); rec.Code != http.StatusTooManyRequests || rec.Header().Get("Retry-After") == "" {
		t.Fatalf("page over budget: HTTP %d %q", rec.Code, rec.Header().Get("Retry-After"))
	}
	// Proxy headers are not a way out.
	if rec := call(n, publicListener, find, a, nil, "X-Forwarded-For", "198.51.100.9", "Forwarded", "for=198.51.100.9"); !limited(rec) {
		t.Fatalf("X-Forwarded-For bought a fresh budget: %d %s", rec.Code, rec.Body)
	}
	// Another address has its own budget; writes have their own.
	if rec := call(n, publicListener, find, b, nil); limited(rec) {
		t.Fatalf("another address refused: %s", rec.Body)
	}
	if rec := call(n, publicListener, registryv1connect.PublishServicePublishProcedure, a, nil); limited(rec) {
		t.Fatalf("write refused on the query budget: %s", rec.Body)
	}
	// Sign-in: tight, and its own.
	signIn := nodev1connect.AuthServiceSignInProcedure
	if rec := call(n, publicListener, signIn, b, nil); limited(rec) {
		t.Fatalf("first sign-in refused: %s", rec.Body)
	}
	rec = call(n, publicListener, signIn, b, nil)
	if !limited(rec) || rec.Header().Get("Retry-After") != "10" {
		t.Fatalf("second sign-in: HTTP %d Retry-After %q; want refused, retry after 10 s", rec.Code, rec.Header().Get("Retry-After"))
	}
	// Tokens come back with time.
	clk.advance(time.Second)
	if rec := call(n, publicListener, find, a, nil); limited(rec) {
		t.Fatalf("query a second later refused: %s", rec.Body)
	}
	if rec := call(n, publicListener, find, a, nil); !limited(rec) {
		t.Fatal("one token a second, yet two queries were admitted")
	}
	// The admin listener is not limited.
	for range 10 {
		if rec := call(n, adminListener, "/debug/pprof/", a, nil); limited(rec) {
			t.Fatal("admin listener rate limited")
		}
	}
	res, err := http.Get(n.AdminURL() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	for _, want := range []string{
		`verbund_rate_limit_refusals_total{class="query",listener="public"} 4`,
		`verbund_rate_limit_refusals_total{class="sign_in",listener="public"} 1`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// TestRateLimitPeerByNode: on the peer listener the budget is per node id
// (from the verified certificate), whatever address the node calls from.
func TestRateLimitPeerByNode(t *testing.T) {
	n, _ := limitedNode(t, RateLimits{Peer: Budget{PerSecond: 1, Burst: 2}})
	caPEM, caKey, err := peertls.NewCA("test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	state := func(id string) *tls.ConnectionState {
		certPEM, _, err := peertls.IssueNodeCert(caPEM, caKey, id, []string{"127.0.0.1"}, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		blk, _ := pem.Decode(certPEM)
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		return &tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{c}}}
	}
	n1, n2 := state("n1"), state("n2")
	ri := nodev1connect.ClusterServiceReadIndexProcedure
	for i, addr := range []string{"127.0.0.1:1", "127.0.0.5:2"} {
		if rec := call(n, peerListener, ri, addr, n1); limited(rec) {
			t.Fatalf("peer call %d refused: %s", i, rec.Body)
		}
	}
	if rec := call(n, peerListener, ri, "127.0.0.9:3", n1); !limited(rec) {
		t.Fatal("node n1 over its budget from a third address was admitted: the peer budget is not per node id")
	}
	if rec := call(n, peerListener, ri, "127.0.0.1:1", n2); limited(rec) {
		t.Fatalf("node n2 refused on n1's budget: %s", rec.Body)
	}
}

// TestRateLimitTableBounded: 10^5 distinct source addresses leave at most
// MaxTracked buckets per class; evicted callers start with a full bucket.
func TestRateLimitTableBounded(t *testing.T) {
	const maxTracked = 1000
	tab := newLimiterTable(Budget{PerSecond: 1, Burst: 1}, maxTracked)
	now := time.Unix(1_800_000_000, 0)
	for i := range 100_000 {
		key := sourceKey(fmt.Sprintf("10.%d.%d.%d:443", i>>16, (i>>8)&255, i&255))
		if d, _ := tab.take(key, now); d != 0 {
			t.Fatalf("new address %s refused", key)
		}
	}
	if got := tab.len(); got != maxTracked {
		t.Fatalf("%d buckets tracked after 10^5 addresses; want the bound %d", got, maxTracked)
	}
	// The most recent address is still tracked (and empty); the oldest was
	// evicted and starts afresh.
	if d, _ := tab.take(sourceKey("10.1.134.159:443"), now); d == 0 {
		t.Fatal("the last address got a second token in the same instant")
	}
	if d, _ := tab.take(sourceKey("10.0.0.0:443"), now); d != 0 {
		t.Fatal("an evicted address was refused")
	}
}

// TestRateLimitSourceKey: IPv4 per address, IPv6 per /64, ports ignored.
func TestRateLimitSourceKey(t *testing.T) {
	for _, tc := range []struct{ a, b string }{
		{"192.0.2.1:1", "192.0.2.1:2"},
		{"[2001:db8:1:2::1]:1", "[2001:db8:1:2:ffff::9]:2"},
		{"[::ffff:192.0.2.1]:1", "192.0.2.1:7"},
	} {
		if sourceKey(tc.a) != sourceKey(tc.b) {
			t.Errorf("%s and %s should share a bucket: %s vs %s", tc.a, tc.b, sourceKey(tc.a), sourceKey(tc.b))
		}
	}
	for _, tc := range []struct{ a, b string }{
		{"192.0.2.1:1", "192.0.2.2:1"},
		{"[2001:db8:1:2::1]:1", "[2001:db8:1:3::1]:1"},
	} {
		if sourceKey(tc.a) == sourceKey(tc.b) {
			t.Errorf("%s and %s share bucket %s", tc.a, tc.b, sourceKey(tc.a))
		}
	}
}

// TestRateLimitClassOf: sign-in, writes and queries draw from their own
// budgets.
func TestRateLimitClassOf(t *testing.T) {
	for path, want := range map[string]limitClass{
		nodev1connect.AuthServiceSignInProcedure:             classSignIn,
		registryv1connect.PublishServicePublishProcedure:     classWrite,
		nodev1connect.ConsoleServiceSubmitProcedure:          classWrite,
		nodev1connect.NodeServiceRotateKeysProcedure:         classWrite,
		registryv1connect.QueryServiceFindProvidersProcedure: classQuery,
		registryv1connect.WatchServiceWatchProcedure:         classQuery,
		nodev1connect.NodeServiceGetStatusProcedure:          classQuery,
		"/": classQuery,
		"/" + registryv1connect.PublishServiceName + "Something": classQuery,
	} {
		if got := classOf(path); got != want {
			t.Errorf("classOf(%s) = %s, want %s", path, got, want)
		}
	}
}

// TestRateLimitConfig: defaults are on and valid; nonsense is refused;
// Scale raises every budget.
func TestRateLimitConfig(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	cfg.RateLimits = RateLimits{}
	if err := cfg.withDefaults().Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	if d := DefaultConfig().RateLimits; d.Off || d.Query.PerSecond <= 0 {
		t.Fatalf("rate limits not on by default: %+v", d)
	}
	bad := cfg
	bad.RateLimits = RateLimits{Query: Budget{PerSecond: -1, Burst: 1}}
	if err := bad.withDefaults().Validate(); err == nil {
		t.Fatal("a negative query rate was accepted")
	}
	s := DefaultRateLimits().Scale(100)
	if s.Query.PerSecond != 100*DefaultRateLimits().Query.PerSecond || s.SignIn.Burst != 100*DefaultRateLimits().SignIn.Burst {
		t.Fatalf("Scale(100) = %+v", s)
	}
}

// TestRateLimitFairQueue: when every query slot is busy, a freed slot goes
// to the waiting caller with the most tokens left, whoever came first; a
// full queue refuses; a cancelled waiter leaves the queue.
func TestRateLimitFairQueue(t *testing.T) {
	q := newFairQueue(1, 2)
	ctx := context.Background()
	if err := q.acquire(ctx, 0); err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 2)
	wait := func(name string, prio float64) {
		go func() {
			if err := q.acquire(ctx, prio); err != nil {
				t.Error(err)
				return
			}
			got <- name
		}()
	}
	waiting := func(k int) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
			q.mu.Lock()
			l := len(q.waiting)
			q.mu.Unlock()
			if l == k {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d waiting, want %d", l, k)
			}
		}
	}
	wait("flooder", 0.2) // arrives first, nearly out of tokens
	waiting(1)
	wait("well-behaved", 9)
	waiting(2)
	if err := q.acquire(ctx, 5); err != errQueueFull {
		t.Fatalf("third waiter: %v, want errQueueFull", err)
	}
	q.release()
	if first := <-got; first != "well-behaved" {
		t.Fatalf("slot went to %s first", first)
	}
	q.release()
	if second := <-got; second != "flooder" {
		t.Fatalf("then %s", second)
	}
	// A waiter whose request is cancelled leaves the queue.
	cctx, cancel := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() { errc <- q.acquire(cctx, 1) }()
	waiting(1)
	cancel()
	if err := <-errc; err == nil {
		t.Fatal("cancelled waiter got a slot")
	}
	waiting(0)
	q.release()
	if err := q.acquire(ctx, 0); err != nil {
		t.Fatal(err)
	}
}

// TestRateLimitPacing: a refusal is answered only after the caller's wait
// for its next token (a looping client cannot make the node refuse it
// thousands of times a second).
func TestRateLimitPacing(t *testing.T) {
	n, _ := limitedNode(t, RateLimits{Query: Budget{PerSecond: 10, Burst: 1}, MaxRefusalDelay: time.Second})
	n.limiter.Load().now = time.Now
	find := registryv1connect.QueryServiceFindProvidersProcedure
	if rec := call(n, publicListener, find, "127.0.0.1:1", nil); limited(rec) {
		t.Fatal("first query refused")
	}
	start := time.Now()
	rec := call(n, publicListener, find, "127.0.0.1:1", nil)
	if took := time.Since(start); !limited(rec) || took < 80*time.Millisecond {
		t.Fatalf("second query: limited %v after %v; want refused after the 100 ms wait for a token", limited(rec), took)
	}
}

// TestRateLimitQuerySlots: an admitted query waits for a query slot;
// writes and the change feed's streams do not.
func TestRateLimitQuerySlots(t *testing.T) {
	n, _ := limitedNode(t, RateLimits{MaxConcurrentQueries: 1})
	q := n.limiter.Load().queries
	if err := q.acquire(context.Background(), 0); err != nil { // the only slot
		t.Fatal(err)
	}
	done := make(chan *httptest.ResponseRecorder, 1)
	go func() {
		done <- call(n, publicListener, registryv1connect.QueryServiceFindProvidersProcedure, "127.0.0.1:1", nil)
	}()
	select {
	case rec := <-done:
		t.Fatalf("query served while the only slot was taken: %d %s", rec.Code, rec.Body)
	case <-time.After(100 * time.Millisecond):
	}
	for _, path := range []string{registryv1connect.PublishServicePublishProcedure, nodev1connect.AuthServiceSignInProcedure} {
		finished := make(chan struct{})
		go func() { call(n, publicListener, path, "127.0.0.2:1", nil); close(finished) }()
		select {
		case <-finished:
		case <-time.After(5 * time.Second):
			t.Fatalf("%s waited for a query slot", path)
		}
	}
	q.release()
	select {
	case rec := <-done:
		if limited(rec) {
			t.Fatalf("query refused: %s", rec.Body)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("query still waiting after the slot was freed")
	}
}
