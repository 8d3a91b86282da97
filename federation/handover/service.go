package handover

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
	jose "github.com/go-jose/go-jose/v4"

	"github.com/verbund/verbund/federation/envelope"
	"github.com/verbund/verbund/internal/badgercheck"
	"github.com/verbund/verbund/internal/badgerlog"
	federationv1 "github.com/verbund/verbund/proto/gen/verbund/federation/v1"
)

// Directory finds the API endpoint of an organisation's node (the
// registry's Organisation.api_endpoint).
type Directory interface {
	Endpoint(ctx context.Context, org string) (string, error)
}

// Liveness says whether an organisation's node is believed to be up
// (gossip). The deliverer pauses deliveries to organisations that are not
// alive instead of spending attempts on them. A nil Liveness means always
// alive. Never used to authorise anything.
type Liveness interface {
	Alive(org string) bool
}

// Dialer returns the Peer for another node's handover endpoint (the
// registry's Organisation.api_endpoint). The node supplies TLS-capable
// peers; they may be cached.
type Dialer interface {
	Peer(endpoint string) Peer
}

// Peer is another organisation's node, as the deliverer and the tracker
// reach it. Implementations carry the calls over the network (the node's
// Connect adapter, node/handoverapi).
//
// Errors: an error that wraps ErrRefused means the peer refused the token
// for good (invalid, replayed, not addressed to it, expired, too large, an
// event for a handover it does not know): the deliverer stops retrying.
// Any other error (network, timeout, unavailable, a key the peer's registry
// copy does not know yet) is retried.
type Peer interface {
	DeliverHandover(ctx context.Context, token string) (receipt string, err error)
	DeliverEvent(ctx context.Context, token string) (receipt string, err error)
	GetCaseTimeline(ctx context.Context, req *federationv1.GetCaseTimelineRequest) (*federationv1.GetCaseTimelineResponse, error)
}

// KeySource hands the Service the organisation's current private keys each
// time it signs or opens something, so that a key rotation takes effect
// without rebuilding the Service. Implementations must be safe for
// concurrent use and cheap (an atomic load).
type KeySource interface {
	// SigningKey is the current Ed25519 signing key (private, with a kid).
	SigningKey() jose.JSONWebKey
	// DecryptionKeys are the private encryption keys, the current one
	// first, then earlier ones kept to open envelopes sealed before a
	// rotation.
	DecryptionKeys() []jose.JSONWebKey
}

// SpaceGuard admits or refuses new writes: the node's disk guard
// (node/diskspace), which refuses while the disk is nearly full. Check must
// be cheap (it is called on every write request) and safe for concurrent
// use; its error is returned to the caller unchanged, so the edge can map
// it (node/connecterr: resource_exhausted, retryable).
type SpaceGuard interface {
	Check() error
}

// AuditPublisher publishes the head of this organisation's audit chain to
// the registry (the node signs a put_audit_head command). It must be
// idempotent: the same head may be published again after a crash.
type AuditPublisher interface {
	PublishAuditHead(ctx context.Context, seq uint64, hash string) error
}

// ErrNoAuditHead is returned by an AuditHeadSource when nothing has been
// published yet.
var ErrNoAuditHead = errors.New("handover: no published audit head")

// AuditHeadSource reads the audit head the registry holds for an
// organisation (registry.Reader.AuditHead). Optional; VerifyAudit checks
// it in addition to the heads this node recorded as published.
type AuditHeadSource interface {
	PublishedAuditHead(ctx context.Context, org string) (seq uint64, hash string, err error)
}

// Config configures a Service.
type Config struct {
	// OrgID is this node's organisation.
	OrgID string
	// Keys supplies the organisation's current private keys.
	Keys KeySource
	// DB holds outbox, inbox, dedupe records and the audit log (keys under
	// "ho/"). Every change that an answer depends on is committed and synced
	// before the answer: if the DB was opened with SyncWrites(true) the
	// commit syncs, otherwise the Service calls DB.Sync() after each group
	// commit. Prefer a dedicated DB opened with OpenDB (SyncWrites(true)).
	DB *badger.DB
	// Resolver finds published keys and the registry's position (the
	// registry; RegistryKeys).
	Resolver Resolver
	// Directory finds other nodes' endpoints.
	Directory Directory
	// Liveness (optional) pauses deliveries to nodes that are down.
	Liveness Liveness
	// Dialer reaches other nodes.
	Dialer Dialer
	// Space (optional) refuses new writes while the disk is nearly full:
	// SendHandover, the case steps (accept, reject, complete, forward) and
	// deliveries of tokens not received before are refused with its error
	// before anything is written. Reads, redeliveries of tokens already
	// received (answered from the dedupe records) and the deliverer carry
	// on; a sender retries a refused delivery later.
	Space SpaceGuard
	// Audit (optional) publishes the audit chain head every AuditInterval.
	Audit AuditPublisher
	// AuditHeads (optional) reads the published head back for VerifyAudit.
	AuditHeads AuditHeadSource
	Logger     *slog.Logger

	// RetryMin and RetryMax bound the exponential backoff between delivery
	// attempts (with jitter). Defaults 500ms and 5m.
	RetryMin, RetryMax time.Duration
	// MaxAttempts gives up (state failed) after this many failed attempts;
	// 0 retries for ever (until the envelope expires).
	MaxAttempts int
	// DeliveryTimeout bounds one delivery attempt (default 30s).
	DeliveryTimeout time.Duration
	// Workers is the number of concurrent deliveries (default 16).
	Workers int
	// AuditInterval is how often the audit head is published (default 1m).
	AuditInterval time.Duration
	// HandoverTTL is the lifetime (exp - iat) of handovers and events
	// (default 30 days): an envelope not delivered by then fails.
	HandoverTTL time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time

	// faults injects crashes and broken variants at named points in the
	// chaos tests (faults.go); nil in production.
	faults faults
}

func (c *Config) withDefaults() {
	if c.RetryMin <= 0 {
		c.RetryMin = 500 * time.Millisecond
	}
	if c.RetryMax <= 0 {
		c.RetryMax = 5 * time.Minute
	}
	if c.RetryMax < c.RetryMin {
		c.RetryMax = c.RetryMin
	}
	if c.DeliveryTimeout <= 0 {
		c.DeliveryTimeout = 30 * time.Second
	}
	if c.Workers <= 0 {
		c.Workers = 16
	}
	if c.AuditInterval <= 0 {
		c.AuditInterval = time.Minute
	}
	if c.HandoverTTL <= 0 {
		c.HandoverTTL = 30 * 24 * time.Hour
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

func (c *Config) validate() error {
	switch {
	case c.OrgID == "":
		return errors.New("handover: OrgID is required")
	case c.DB == nil:
		return errors.New("handover: DB is required")
	case c.Resolver == nil:
		return errors.New("handover: Resolver is required")
	case c.Directory == nil:
		return errors.New("handover: Directory is required")
	case c.Dialer == nil:
		return errors.New("handover: Dialer is required")
	case c.Keys == nil:
		return errors.New("handover: Keys is required")
	}
	if k := c.Keys.SigningKey(); k.KeyID == "" || k.IsPublic() {
		return errors.New("handover: the signing key must be a private key with a kid")
	}
	dec := c.Keys.DecryptionKeys()
	if len(dec) == 0 || dec[0].KeyID == "" || dec[0].IsPublic() {
		return errors.New("handover: the current encryption key must be a private key with a kid")
	}
	return nil
}

// OpenDB opens (or creates) a badger database for the handover state at
// dir, with SyncWrites(true) so that every commit is on disk before it
// returns, and with badger's checksums verified for every table at open and
// on every block and value read (internal/badgercheck). New adds the start-up checks (highwater.go).
func OpenDB(dir string, logger *slog.Logger) (*badger.DB, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	opts := badger.DefaultOptions(dir).
		WithSyncWrites(true).
		// Verify every block's checksum when it is read (badgercheck.Open
		// verifies every table at open) and every value-log entry's: a
		// flipped byte is an error, never data. (A damaged write-ahead log
		// tail is dropped by badger on open; the high-water mark catches
		// that.)
		WithChecksumVerificationMode(options.OnBlockRead).
		WithVerifyValueChecksum(true).
		WithLogger(badgerlog.New(logger, "badger-handover")).
		WithNumVersionsToKeep(1).
		WithCompactL0OnClose(true)
	db, err := badgercheck.Open(opts)
	if err != nil {
		return nil, fmt.Errorf("handover: open %s: %w", dir, err)
	}
	return db, nil
}

// Service is one organisation's handover endpoint: outbox and deliverer,
// inbox, case lifecycle, tracking and audit log. Create it with New, serve
// it (the node's Connect adapter, node/handoverapi, translates requests into
// its methods), call Run in a goroutine, and Close when done (before
// closing the DB).
type Service struct {
	cfg   Config
	log   *slog.Logger
	db    *badger.DB
	com   *committer
	del   *deliverer
	stats counters

	lastPublished atomic.Uint64
	restore       *restoreRecord // set at New if the store was restored (backup.go)

	gate     sync.RWMutex
	closed   bool
	inflight sync.WaitGroup
	runMu    sync.Mutex
	runs     sync.WaitGroup
	ctx      context.Context // cancelled by Close
	cancel   context.CancelFunc
}

// New opens the Service on cfg.DB. Everything it knows is in the DB: a new
// Service on the same DB after a crash continues where the old one stopped
// (pending deliveries are retried; duplicates are answered from the dedupe
// records).
func New(cfg Config) (*Service, error) {
	cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	s := &Service{cfg: cfg, db: cfg.DB, log: cfg.Logger.With("component", "handover", "org", cfg.OrgID)}
	s.stats.init()
	var err error
	if s.com, err = newCommitter(cfg.DB, cfg.Now, cfg.faults); err != nil {
		return nil, err
	}
	if s.com.hwCreated {
		s.log.Warn("handover store had no high-water mark file; created it from the store", "file", s.com.hw.path, "commit", s.com.commit)
	}
	if err := s.checkRestored(); err != nil { // backup.go
		s.com.stop()
		return nil, err
	}
	if err := s.checkPublishedHead(); err != nil {
		s.com.stop()
		return nil, err
	}
	if err := s.loadLastPublished(); err != nil {
		s.com.stop()
		return nil, err
	}
	s.del = newDeliverer(s)
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s, nil
}

// Run runs the deliverer and the audit publisher until ctx is cancelled or
// Close is called.
func (s *Service) Run(ctx context.Context) {
	s.runMu.Lock()
	if s.isClosed() {
		s.runMu.Unlock()
		return
	}
	s.runs.Add(1)
	s.runMu.Unlock()
	defer s.runs.Done()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(s.ctx, cancel)
	defer stop()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); s.del.run(ctx) }()
	go func() { defer wg.Done(); s.auditLoop(ctx) }()
	wg.Wait()
	st := s.Stats()
	s.log.Info("handover service stopped", "delivered", st.Delivered, "received", st.Received,
		"duplicates", st.Duplicates, "retries", st.Retries, "rejected", st.RejectedTotal())
}

// Close stops Run, waits for requests in progress, and stops the
// committer. Work not yet committed is dropped, as in a crash; nothing was
// acknowledged for it. The DB stays open.
func (s *Service) Close() error {
	s.gate.Lock()
	already := s.closed
	s.closed = true
	s.gate.Unlock()
	if already {
		return nil
	}
	s.runMu.Lock() // no Run starts after this
	s.runMu.Unlock()
	s.cancel()
	s.runs.Wait()
	s.inflight.Wait()
	s.com.stop()
	return nil
}

func (s *Service) isClosed() bool {
	s.gate.RLock()
	defer s.gate.RUnlock()
	return s.closed
}

// enter registers a request; the returned func must be called when done.
func (s *Service) enter() (func(), error) {
	s.gate.RLock()
	defer s.gate.RUnlock()
	if s.closed {
		return nil, errUnavailable("service is shutting down")
	}
	s.inflight.Add(1)
	return s.inflight.Done, nil
}

func (s *Service) now() time.Time { return s.cfg.Now() }

// admitWrite asks Config.Space whether new work may be written now.
func (s *Service) admitWrite() error {
	if s.cfg.Space == nil {
		return nil
	}
	return s.cfg.Space.Check()
}

// OrgID is the organisation this Service runs for.
func (s *Service) OrgID() string { return s.cfg.OrgID }

// NoteRejected counts a request the edge refused before it reached the
// Service (reason as in Stats.Rejected, e.g. "too_large") and logs it with
// attrs.
func (s *Service) NoteRejected(reason string, attrs ...any) {
	s.stats.reject(reason)
	s.log.Warn("delivery rejected", append([]any{"reason", reason}, attrs...)...)
}

// MaxRequestBytes bounds any HandoverService request: the largest
// envelope plus room for the protobuf/JSON framing. The edge refuses larger
// requests (and counts them with NoteRejected).
const MaxRequestBytes = envelope.MaxEnvelopeSize + 64<<10
