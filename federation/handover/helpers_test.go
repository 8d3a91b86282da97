package handover

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	jose "github.com/go-jose/go-jose/v4"

	"github.com/verbund/verbund/federation/envelope"
	"github.com/verbund/verbund/keys"
	federationv1 "github.com/verbund/verbund/proto/gen/verbund/federation/v1"
	"github.com/verbund/verbund/proto/gen/verbund/federation/v1/federationv1connect"
)

const (
	orgA  = "org-a"
	orgB  = "org-b"
	orgC  = "org-c"
	leika = "99123456789012"
)

func seed(label string) []byte {
	s := sha256.Sum256([]byte("verbund handover test key " + label))
	return s[:]
}

// Deterministic keys, so that committed fuzz seeds stay decryptable.
func sigKey(kid string) jose.JSONWebKey { return keys.SigningFromSeed(kid, seed(kid)) }

func encKey(t testing.TB, kid string) jose.JSONWebKey {
	t.Helper()
	priv, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), seed(kid))
	if err != nil {
		t.Fatal(err)
	}
	return jose.JSONWebKey{Key: priv, KeyID: kid, Algorithm: string(keys.KeyEncryptionAlg), Use: keys.UseEnc}
}

type pubKey struct {
	org         string
	pub         jose.JSONWebKey
	from, until time.Time
	revoked     bool
}

// registry is the test registry: published keys and endpoints of the
// organisations (KeyResolver and Directory), plus audit heads
// (AuditPublisher / AuditHeadSource per organisation).
type registry struct {
	mu        sync.Mutex
	sig       map[string]pubKey
	enc       map[string]jose.JSONWebKey
	endpoints map[string]string
	heads     map[string][2]any // org -> {seq, hash}
	publishes atomic.Int64
}

func newRegistry() *registry {
	return &registry{sig: map[string]pubKey{}, enc: map[string]jose.JSONWebKey{}, endpoints: map[string]string{}, heads: map[string][2]any{}}
}

func (r *registry) publishSig(org string, k jose.JSONWebKey, from time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sig[k.KeyID] = pubKey{org: org, pub: k.Public(), from: from}
}

// retire gives kid a grace period ending at until.
func (r *registry) retire(kid string, until time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := r.sig[kid]
	k.until = until
	r.sig[kid] = k
}

func (r *registry) publishEnc(org string, k jose.JSONWebKey) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.enc[org] = k.Public()
}

func (r *registry) setEndpoint(org, url string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.endpoints[org] = url
}

func (r *registry) VerificationKey(_ context.Context, org, kid string, m keys.Moment) (jose.JSONWebKey, error) {
	at := m.Time()
	r.mu.Lock()
	defer r.mu.Unlock()
	k, ok := r.sig[kid]
	switch {
	case !ok:
		return jose.JSONWebKey{}, fmt.Errorf("kid %q: %w", kid, envelope.ErrUnknownKey)
	case k.revoked:
		return jose.JSONWebKey{}, fmt.Errorf("kid %q: %w", kid, envelope.ErrRevokedKey)
	case k.org != org:
		return jose.JSONWebKey{}, fmt.Errorf("kid %q: %w", kid, envelope.ErrKeyNotOwned)
	case at.Before(k.from) || (!k.until.IsZero() && !at.Before(k.until)):
		return jose.JSONWebKey{}, fmt.Errorf("kid %q at %s: %w", kid, at, envelope.ErrKeyInactive)
	}
	return k.pub, nil
}

// Position implements Resolver: the test registry has no order; keys are
// judged by time only.
func (r *registry) Position(context.Context) (uint64, error) { return 1, nil }

func (r *registry) EncryptionKey(_ context.Context, org string) (jose.JSONWebKey, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	k, ok := r.enc[org]
	if !ok {
		return jose.JSONWebKey{}, fmt.Errorf("org %q: %w", org, envelope.ErrUnknownKey)
	}
	return k, nil
}

func (r *registry) Endpoint(_ context.Context, org string) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.endpoints[org]
	if !ok {
		return "", fmt.Errorf("no endpoint for %q", org)
	}
	return e, nil
}

// auditFor is the AuditPublisher/AuditHeadSource of one organisation,
// with the registry's rules (no going back, no second hash for a sequence).
type auditFor struct {
	r   *registry
	org string
}

func (a auditFor) PublishAuditHead(_ context.Context, seq uint64, hash string) error {
	a.r.mu.Lock()
	defer a.r.mu.Unlock()
	if old, ok := a.r.heads[a.org]; ok {
		if seq < old[0].(uint64) {
			return fmt.Errorf("stale audit head %d < %d", seq, old[0])
		}
		if seq == old[0].(uint64) && hash != old[1].(string) {
			return errors.New("audit head already published with another hash")
		}
	}
	a.r.heads[a.org] = [2]any{seq, hash}
	a.r.publishes.Add(1)
	return nil
}

func (a auditFor) PublishedAuditHead(_ context.Context, org string) (uint64, string, error) {
	a.r.mu.Lock()
	defer a.r.mu.Unlock()
	h, ok := a.r.heads[org]
	if !ok {
		return 0, "", ErrNoAuditHead
	}
	return h[0].(uint64), h[1].(string), nil
}

// liveness is a settable Liveness.
type liveness struct {
	mu   sync.Mutex
	down map[string]bool
}

func (l *liveness) Alive(org string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return !l.down[org]
}

func (l *liveness) set(org string, alive bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.down == nil {
		l.down = map[string]bool{}
	}
	l.down[org] = !alive
}

// The Connect edge of the Service lives in node/handoverapi, which imports
// this package: an internal test cannot import it (import cycle). The
// external test package sets these in wire_test.go, so the tests here run
// over the real edge.
var (
	// WireHandler is handoverapi.NewHandler.
	WireHandler func(s *Service) (string, http.Handler)
	// WirePeer is a handoverapi.Peer over a Connect client of endpoint.
	WirePeer func(hc *http.Client, endpoint string) Peer
	// WireError is the edge's error mapping (connecterr.ToConnect).
	WireError func(err error) error
)

// dialer makes Connect peers over one http.Client.
type dialer struct {
	hc *http.Client
	mu sync.Mutex
	m  map[string]Peer
}

func (d *dialer) Peer(endpoint string) Peer {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.m == nil {
		d.m = map[string]Peer{}
	}
	c, ok := d.m[endpoint]
	if !ok {
		c = WirePeer(d.hc, endpoint)
		d.m[endpoint] = c
	}
	return c
}

// faultyTransport drops requests before they are sent, drops responses
// after the server handled the request, and cuts request bodies mid-way,
// each with its probability (per mille), while enabled.
type faultyTransport struct {
	next                            http.RoundTripper
	enabled                         atomic.Bool
	dropReq, dropResp, cut          int
	droppedReq, droppedResp, cutCnt atomic.Int64
}

var errInjected = errors.New("injected network fault")

func (f *faultyTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if !f.enabled.Load() {
		return f.next.RoundTrip(r)
	}
	n := rand.IntN(1000)
	switch {
	case n < f.dropReq:
		f.droppedReq.Add(1)
		if r.Body != nil {
			r.Body.Close()
		}
		return nil, errInjected
	case n < f.dropReq+f.cut && r.Body != nil:
		// Send part of the body, then fail: the server sees a truncated
		// request.
		f.cutCnt.Add(1)
		r2 := r.Clone(r.Context())
		r2.Body = &cutBody{r: r.Body, left: max(1, r.ContentLength/2)}
		resp, err := f.next.RoundTrip(r2)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		return nil, errInjected
	}
	resp, err := f.next.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	if n < f.dropReq+f.cut+f.dropResp {
		// The server did the work; the answer is lost.
		f.droppedResp.Add(1)
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return nil, errInjected
	}
	return resp, nil
}

type cutBody struct {
	r    io.ReadCloser
	left int64
}

func (c *cutBody) Read(p []byte) (int, error) {
	if c.left <= 0 {
		return 0, errInjected
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.r.Read(p)
	c.left -= int64(n)
	return n, err
}

func (c *cutBody) Close() error { return c.r.Close() }

// node is one organisation's Service behind a long-lived HTTP server, so
// that it can be killed and restarted under the same endpoint.
type node struct {
	t       testing.TB
	org     string
	dir     string
	reg     *registry
	mu      sync.Mutex // serialises start/stop
	db      *badger.DB
	svc     atomic.Pointer[Service]
	handler atomic.Pointer[http.Handler]
	srv     *httptest.Server
	cancel  context.CancelFunc
	runDone chan struct{}
	sig     jose.JSONWebKey
	enc     jose.JSONWebKey
	oldEnc  []jose.JSONWebKey
	// configure adjusts the Config before each start.
	configure func(*Config)
	restarts  atomic.Int64
	total     Stats // counters of earlier incarnations
	// syncWrites opens the DB with OpenDB (SyncWrites(true)).
	syncWrites bool
	// onRefused (optional) is told when New refuses the store at a start;
	// if it returns true the high-water mark file is deleted (the
	// operator's "accept the store as it is") and the start retried.
	onRefused func(err error) bool
	// dbOpts (optional) adjusts the badger options (SyncWrites(false) DB).
	dbOpts func(badger.Options) badger.Options
}

func newNode(t testing.TB, reg *registry, org string, configure func(*Config)) *node {
	t.Helper()
	return newNodeSync(t, reg, org, configure, false)
}

func newNodeSync(t testing.TB, reg *registry, org string, configure func(*Config), syncWrites bool) *node {
	t.Helper()
	return newNodeWith(t, reg, org, configure, func(n *node) { n.syncWrites = syncWrites })
}

// newNodeWith is newNode with setup run on the node before its first start.
func newNodeWith(t testing.TB, reg *registry, org string, configure func(*Config), setup func(*node)) *node {
	t.Helper()
	n := &node{t: t, org: org, dir: t.TempDir(), reg: reg, configure: configure}
	if setup != nil {
		setup(n)
	}
	n.sig = sigKey(org + "-sig-1")
	n.enc = encKey(t, org+"-enc-1")
	reg.publishSig(org, n.sig, time.Now().Add(-24*time.Hour))
	reg.publishEnc(org, n.enc)
	n.srv = httptest.NewServer(http.HandlerFunc(n.serve))
	t.Cleanup(n.srv.Close)
	reg.setEndpoint(org, n.srv.URL)
	n.start()
	t.Cleanup(n.stop)
	return n
}

func (n *node) serve(w http.ResponseWriter, r *http.Request) {
	h := n.handler.Load()
	if h == nil {
		http.Error(w, "node down", http.StatusServiceUnavailable)
		return
	}
	(*h).ServeHTTP(w, r)
}

func quietLogger() *slog.Logger {
	if os.Getenv("HANDOVER_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func (n *node) start() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.startLocked()
}

func (n *node) startLocked() {
	t := n.t
	var db *badger.DB
	var err error
	if n.syncWrites {
		db, err = OpenDB(n.dir, nil) // SyncWrites(true), as a node would
	} else {
		// SyncWrites(false): the Service syncs explicitly after each commit.
		opts := badger.DefaultOptions(n.dir).WithLogger(nil).WithSyncWrites(false).
			WithNumVersionsToKeep(1).WithMemTableSize(8 << 20).WithValueLogFileSize(64 << 20)
		if n.dbOpts != nil {
			opts = n.dbOpts(opts)
		}
		db, err = badger.Open(opts)
	}
	if err != nil {
		t.Fatalf("open badger for %s: %v", n.org, err)
	}
	cfg := Config{
		OrgID: n.org, Keys: n,
		DB: db, Resolver: n.reg, Directory: n.reg, Dialer: &dialer{hc: http.DefaultClient},
		Audit: auditFor{n.reg, n.org}, AuditHeads: auditFor{n.reg, n.org}, Logger: quietLogger(),
		RetryMin: 5 * time.Millisecond, RetryMax: 100 * time.Millisecond, AuditInterval: 50 * time.Millisecond,
		Workers: 8, DeliveryTimeout: 5 * time.Second,
	}
	if n.configure != nil {
		n.configure(&cfg)
	}
	s, err := New(cfg)
	if err != nil && n.onRefused != nil && n.onRefused(err) {
		if rerr := os.Remove(filepath.Join(n.dir, HighWaterFile)); rerr != nil {
			t.Errorf("remove high-water mark: %v", rerr)
		}
		cfg.AuditHeads = nil // and do not compare with the published head
		s, err = New(cfg)
	}
	if err != nil {
		db.Close()
		t.Fatalf("new service %s: %v", n.org, err)
	}
	n.db = db
	ctx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	n.runDone = make(chan struct{})
	go func() { defer close(n.runDone); s.Run(ctx) }()
	_, h := WireHandler(s)
	n.handler.Store(&h)
	n.svc.Store(s)
}

// stop kills the node: no more requests, Run and the committer stop (work
// not committed is dropped), the DB is closed.
func (n *node) stop() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.stopLocked()
}

func (n *node) stopLocked() {
	n.handler.Store(nil)
	s := n.svc.Swap(nil)
	if s == nil {
		return
	}
	n.cancel()
	n.total = addStats(n.total, s.Stats())
	if err := s.Close(); err != nil {
		n.t.Errorf("close %s: %v", n.org, err)
	}
	<-n.runDone
	if err := n.db.Close(); err != nil {
		n.t.Errorf("close db %s: %v", n.org, err)
	}
}

func (n *node) restart(between func()) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.stopLocked()
	if between != nil {
		between()
	}
	n.startLocked()
	n.restarts.Add(1)
}

// SigningKey implements KeySource: the node's current keys (tests change
// them only while the node is stopped, see restart).
func (n *node) SigningKey() jose.JSONWebKey { return n.sig }

// DecryptionKeys implements KeySource.
func (n *node) DecryptionKeys() []jose.JSONWebKey {
	return append([]jose.JSONWebKey{n.enc}, n.oldEnc...)
}

// s returns the running Service (waiting for a restart to finish).
func (n *node) s() *Service {
	for {
		if s := n.svc.Load(); s != nil {
			return s
		}
		time.Sleep(time.Millisecond)
	}
}

// client is a reliable Connect client of the node's HTTP API.
func (n *node) client() federationv1connect.HandoverServiceClient {
	return federationv1connect.NewHandoverServiceClient(http.DefaultClient, n.srv.URL)
}

func caseRequest(to string, i int) *federationv1.SendHandoverRequest {
	return &federationv1.SendHandoverRequest{
		RecipientOrganisationId: to,
		CaseJson:                fmt.Sprintf(`{"applicant":{"name":"Erika Mustermann"},"n":%d}`, i),
		Reason:                  "change of residence",
		LeikaKey:                leika,
	}
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// outbox returns all outbox entries of s.
func outbox(t testing.TB, s *Service) []*federationv1.OutboxEntry {
	t.Helper()
	var all []*federationv1.OutboxEntry
	tok := ""
	for {
		res, err := s.ListOutbox(context.Background(), &federationv1.ListOutboxRequest{PageSize: 1000, PageToken: tok})
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, res.Entries...)
		if tok = res.NextPageToken; tok == "" {
			return all
		}
	}
}

// inbox returns all inbox entries of s, in arrival order (a case that
// arrived twice appears twice).
func inbox(t testing.TB, s *Service) []*federationv1.CaseSummary {
	t.Helper()
	var all []*federationv1.CaseSummary
	tok := ""
	for {
		res, err := s.ListInbox(context.Background(), &federationv1.ListInboxRequest{PageSize: 1000, PageToken: tok})
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, res.Cases...)
		if tok = res.NextPageToken; tok == "" {
			return all
		}
	}
}

func pendingCount(t testing.TB, s *Service) int {
	n := 0
	for _, e := range outbox(t, s) {
		if e.State == federationv1.OutboxState_OUTBOX_STATE_PENDING {
			n++
		}
	}
	return n
}

// countKeys counts the keys under prefix.
// storedHead is the audit chain head in the store. Stats().AuditHead moves
// just after a commit becomes visible there, so state compared with what
// the store shows must not take the head from Stats.
func storedHead(t testing.TB, s *Service) AuditHead {
	t.Helper()
	head, err := loadAuditHead(s.db)
	if err != nil {
		t.Fatal(err)
	}
	return head
}

func countKeys(t testing.TB, s *Service, prefix string) int {
	t.Helper()
	n := 0
	err := s.view(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = []byte(prefix)
		opts.PrefetchValues = false
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.ValidForPrefix(opts.Prefix); it.Next() {
			n++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// pending counts the node's outbox entries waiting for delivery (0 while
// it is down).
func (n *node) pending() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	s := n.svc.Load()
	if s == nil {
		return -1
	}
	return countKeys(n.t, s, pPending)
}

// totalStats sums the counters over all incarnations of the node.
func (n *node) totalStats() Stats {
	n.mu.Lock()
	defer n.mu.Unlock()
	st := n.total
	if s := n.svc.Load(); s != nil {
		st = addStats(st, s.Stats())
		st.Pending, st.AuditHead = s.Stats().Pending, s.Stats().AuditHead
	}
	return st
}

func addStats(a, b Stats) Stats {
	r := Stats{
		Sent: a.Sent + b.Sent, Delivered: a.Delivered + b.Delivered, Received: a.Received + b.Received,
		Duplicates: a.Duplicates + b.Duplicates, Attempts: a.Attempts + b.Attempts, Retries: a.Retries + b.Retries,
		Paused: a.Paused + b.Paused, Failed: a.Failed + b.Failed, BadReceipts: a.BadReceipts + b.BadReceipts,
		AuditPublished: a.AuditPublished + b.AuditPublished, AuditPublishErrors: a.AuditPublishErrors + b.AuditPublishErrors,
		Commits: a.Commits + b.Commits, CommittedOps: a.CommittedOps + b.CommittedOps, Rejected: map[string]uint64{},
	}
	for k, v := range a.Rejected {
		r.Rejected[k] += v
	}
	for k, v := range b.Rejected {
		r.Rejected[k] += v
	}
	return r
}

// staticKeys is a KeySource that never rotates.
type staticKeys struct{ sig, enc jose.JSONWebKey }

func (k staticKeys) SigningKey() jose.JSONWebKey       { return k.sig }
func (k staticKeys) DecryptionKeys() []jose.JSONWebKey { return []jose.JSONWebKey{k.enc} }
