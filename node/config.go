package node

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"path/filepath"
	"runtime"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"

	"github.com/verbund/verbund/federation/peertls"
	"github.com/verbund/verbund/node/auth"
	"github.com/verbund/verbund/node/raftlog"
	"github.com/verbund/verbund/registry"
)

// Roles of a node.
const (
	RoleVoter   = "voter"
	RoleReplica = "replica"
	RoleMember  = "member"
)

// Config configures one node. Zero values take the defaults of
// DefaultConfig; Validate is called once by New.
type Config struct {
	// NodeID names the node in Raft and gossip (default: the OrgID).
	NodeID string
	// OrgID is the organisation this node runs for (ARS or slug).
	OrgID string
	// OrgName is used when the node registers itself at genesis.
	OrgName string
	// DataDir holds badger state, the Raft log, snapshots and keys.
	DataDir string
	// RaftLogFS is the file layer under the Raft log (DataDir/raft/wal);
	// nil means the operating system. Tests put a node's log on an
	// in-memory file system that loses unsynced writes on a simulated
	// power cut (package raftlog/faultfs).
	RaftLogFS raftlog.FS
	// HTTPAddr serves the Connect/gRPC/gRPC-Web API and the web page.
	HTTPAddr string
	// RaftAddr is the Raft transport's listen address.
	RaftAddr string
	// RaftAdvertise is the address other servers dial (default RaftAddr).
	RaftAdvertise string
	// Bootstrap makes a node with no Raft state start a new one-voter
	// cluster and, with Genesis, register itself as the network operator.
	Bootstrap bool
	// Genesis: on an empty registry, sign and commit the genesis command
	// registering OrgID as the network operator with this node's key.
	// (Demo data is imported by the command line after Start, through
	// Publish like any other client.)
	Genesis bool

	// Role: "voter" (a Raft server that may vote), "replica" (a Raft
	// server that never votes: local, fast, current reads) or "member" (no
	// Raft state; a read copy fed by the change feed, writes forwarded).
	Role string
	// Voters is how many voters the leader keeps in the Raft configuration
	// (3 or 5); further voter-role servers join as non-voters.
	Voters int
	// DeadServerGrace: a server gossip reports dead for this long is
	// removed from the Raft configuration by the leader.
	DeadServerGrace time.Duration
	// ReconcileInterval is how often the leader reconciles Raft membership
	// with gossip.
	ReconcileInterval time.Duration

	// GossipAddr is the memberlist bind address ("" disables gossip: a
	// single node). Join lists gossip seeds (host:port).
	GossipAddr string
	Join       []string
	// GossipKeys are AES keys (16, 24 or 32 bytes); the first encrypts.
	GossipKeys [][]byte
	// GossipLabel keeps networks apart on shared infrastructure.
	GossipLabel string
	// GossipProfile: "lan" (default) or "local" (tests).
	GossipProfile string
	// GossipRejoinInterval: how often dead peers and seeds are re-joined.
	GossipRejoinInterval time.Duration
	// WrapRaftTransport, if set, wraps the Raft transport (fault injection
	// in tests).
	WrapRaftTransport func(raft.Transport) raft.Transport
	// TLS, if set, secures node-to-node traffic with mutual TLS under the
	// network's CA: Raft runs over TLS, and the API is also served on
	// PeerAddr with client certificates required; gossip advertises that
	// address, so forwarding, read index and the change feed use it.
	TLS *peertls.Bundle
	// PeerAddr is the mTLS listener for node-to-node API calls (with TLS).
	PeerAddr string
	// AdminAddr, if set, is the admin listener for operators on this
	// machine: net/http/pprof under /debug/pprof/ and Prometheus metrics
	// under /metrics (see access.go, metrics.go). Loopback
	// only unless AllowPublic. Default "": off.
	AdminAddr string
	// AllowPublic permits binding non-loopback addresses. Off by default:
	// nothing listens beyond this machine unless configured.
	AllowPublic bool
	// PeerHTTPClient carries node-to-node API calls (forwarding, read
	// index, change feed); default http.DefaultClient, or TLS when set up.
	PeerHTTPClient *http.Client
	// GossipTransport replaces memberlist's network transport (tests).
	GossipTransport memberlist.NodeAwareTransport

	// Raft timing; tests shorten these.
	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	CommitTimeout      time.Duration
	SnapshotThreshold  uint64
	SnapshotInterval   time.Duration
	TrailingLogs       uint64

	// SnapshotThresholdBytes: the node also takes a Raft snapshot once
	// this many bytes of entries were appended to its log since the last
	// one (default 256 MiB; Raft itself counts only entries), leaving about
	// TrailingLogBytes (default 64 MiB, at most TrailingLogs entries) of
	// log behind. See snapshotbytes.go.
	SnapshotThresholdBytes uint64
	TrailingLogBytes       uint64
	// SnapshotLogRatio raises that threshold with the state: a snapshot
	// by log bytes waits for at least this share of the last snapshot's
	// size (default 0.5). Each snapshot writes the whole state, so with a
	// fixed threshold a growing registry paid a full copy per 256 MiB
	// appended (quadratic in its size: a bulk load of the national data set
	// spent most of its time writing snapshots); with the ratio, snapshots
	// cost at most 1/ratio times what was appended, and the log stays
	// below about ratio times the state. Negative: the fixed threshold only.
	SnapshotLogRatio float64
	// SnapshotRetain is how many Raft snapshots stay on disk (default 2:
	// the newest, and one to fall back to if it is damaged).
	SnapshotRetain int

	FSM    registry.FSMConfig
	Writer registry.WriterConfig

	// AuditInterval: how often the handover audit chain head is published.
	AuditInterval time.Duration

	// DiskReserveBytes: while the file system holding DataDir has fewer
	// bytes free than this, the node refuses new writes with
	// resource_exhausted (registry writes it would propose as leader,
	// handovers and case steps, incoming deliveries, key rotation), keeps
	// serving reads and its Raft role, and takes writes again by itself once
	// space returns (see diskguard.go). 0 takes the default (256 MiB); -1
	// turns the guard off. Otherwise at least 1 MiB.
	DiskReserveBytes int64
	// DiskFree measures the bytes free on the file system holding a
	// directory (default: statfs). Tests inject a full disk.
	DiskFree func(path string) (free uint64, err error)

	// RateLimits are the per-caller request budgets of the public and the
	// peer listener (ratelimit.go). On by default; RateLimits.Off or larger
	// budgets for benchmarks.
	RateLimits RateLimits

	// ExpiryWarnCerts and ExpiryWarnKeys: GetStatus lists, /metrics
	// exports and the log warns (every ExpiryCheckInterval) about the node
	// certificate and the network CA expiring within ExpiryWarnCerts
	// (default 30 days) and the organisation's signing and encryption keys
	// retiring within ExpiryWarnKeys (default 7 days); see expiry.go.
	ExpiryWarnCerts     time.Duration
	ExpiryWarnKeys      time.Duration
	ExpiryCheckInterval time.Duration

	// MaxRequestBytes bounds any API request body.
	MaxRequestBytes int
	// ReadyMaxLag: /readyz reports a server not ready while its state is
	// more than this many committed Raft entries behind (default 1024;
	// health.go).
	ReadyMaxLag uint64
	// ReadTimeout bounds waiting for a consistent or min-index read.
	ReadTimeout time.Duration

	// Clock is the wall clock for the times this node stamps and judges:
	// the proposal time the leader writes into each log entry (which every
	// replica's state machine judges commands by), the issue time of the
	// node's own commands, and the handover service's times (envelope
	// expiry, receipts, audit). Default time.Now; tests inject a clock that
	// jumps. Timeouts and intervals use Go's monotonic clock, not this one.
	// Writer.Now, if set, overrides it for the proposal time.
	Clock func() time.Time

	// TokenTTL is how long the bearer tokens this node signs for its users
	// are valid (default 15 minutes; at most auth.MaxTokenTTL).
	TokenTTL time.Duration
	// PublicTLS, if set, serves the public listener over TLS with this
	// configuration; with ClientAuth RequestClientCert (or stricter) a
	// client certificate whose SHA-256 fingerprint is registered to an
	// enabled user authenticates that user (programs). Nil: plain HTTP
	// (h2c), bearer tokens only.
	PublicTLS *tls.Config
	// OIDCIssuer, if set, accepts ID tokens of this OpenID Connect
	// provider (the organisation's own identity provider) as bearer
	// tokens: their aud must be OIDCClientID and their preferred_username
	// an enabled user of this node, whose roles (the node's) apply.
	OIDCIssuer   string
	OIDCClientID string
	// OIDCHTTPClient fetches the provider's discovery document and keys
	// (default http.DefaultClient).
	OIDCHTTPClient *http.Client

	// FeatureLevel is the registry feature level this node advertises in
	// gossip (the version gate, registry/features.go); 0 means the highest
	// its software supports, registry.SupportedFeatureLevel(). Set it lower
	// only to emulate an older node (tests).
	FeatureLevel uint32

	Logger *slog.Logger
}

// DefaultConfig returns the settings of a production node listening on
// loopback only; anything else must be configured explicitly.
func DefaultConfig() Config {
	return Config{
		DataDir:            "data",
		HTTPAddr:           "127.0.0.1:8080",
		RaftAddr:           "127.0.0.1:7000",
		HeartbeatTimeout:   1000 * time.Millisecond,
		ElectionTimeout:    1000 * time.Millisecond,
		LeaderLeaseTimeout: 500 * time.Millisecond,
		CommitTimeout:      5 * time.Millisecond,
		SnapshotThreshold:  16384,
		SnapshotInterval:   2 * time.Minute,
		TrailingLogs:       10240,
		FSM:                registry.DefaultFSMConfig(),
		MaxRequestBytes:    16 << 20,
		ReadyMaxLag:        1024,
		Role:               RoleVoter,
		Voters:             3,
		DeadServerGrace:    30 * time.Second,
		ReconcileInterval:  time.Second,
		ReadTimeout:        5 * time.Second,
		DiskReserveBytes:   DefaultDiskReserve,

		// Raft snapshots by log bytes (snapshotbytes.go).
		SnapshotThresholdBytes: 256 << 20,
		TrailingLogBytes:       64 << 20,
		SnapshotLogRatio:       0.5,
		SnapshotRetain:         2,

		// Rate limits and expiry warnings (ratelimit.go, expiry.go).
		RateLimits:          DefaultRateLimits(),
		ExpiryWarnCerts:     30 * 24 * time.Hour,
		ExpiryWarnKeys:      7 * 24 * time.Hour,
		ExpiryCheckInterval: time.Hour,
	}
}

// Budget is a token bucket: PerSecond tokens added per second, at most
// Burst held. Each request spends one.
type Budget struct {
	PerSecond float64
	Burst     int
}

func (b Budget) String() string { return fmt.Sprintf("%g/s burst %d", b.PerSecond, b.Burst) }

// RateLimits are the request budgets per caller (see ratelimit.go for who
// a caller is). Zero fields take DefaultRateLimits.
type RateLimits struct {
	// Off turns rate limiting off (benchmarks that measure the node, not
	// its admission; the benchmark reports say so).
	Off bool
	// Query: reads (queries, status, the change feed, pages) per anonymous
	// source address.
	Query Budget
	// Write: signed writes (Publish), console submissions, case steps, key
	// and user management per anonymous source address.
	Write Budget
	// SignIn: password sign-ins per source address: the password guessing
	// surface, kept tight.
	SignIn Budget
	// Peer: everything another node calls on the peer listener, per node id.
	Peer Budget
	// IdentityFactor: an authenticated person or client gets this many
	// times the anonymous budgets, per identity.
	IdentityFactor float64
	// MaxTracked bounds the callers remembered per class (least recently
	// seen evicted first).
	MaxTracked int
	// MaxRefusalDelay: a refusal is answered after the caller's wait for
	// its next token, at most this long (default 1 s; negative: at once),
	// and only while fewer than MaxDelayedRefusals (default 4096) are
	// held; see ratelimit.go.
	MaxRefusalDelay    time.Duration
	MaxDelayedRefusals int
	// MaxConcurrentQueries: admitted queries served at once (default 4 per
	// CPU);
	// more wait, the least demanding caller first, at most
	// MaxQueuedQueries (default 1024) of them. See ratelimit.go.
	MaxConcurrentQueries int
	MaxQueuedQueries     int

	// MaxStreams and MaxStreamsPerCaller cap the change feed streams
	// (WatchService.Watch) open at once on this node's public listener
	// and per caller (default 256 and 8; other nodes on the peer listener:
	// per node id only); MaxSnapshotTransfers and
	// MaxSnapshotTransfersPerCaller cap those of them sending a snapshot
	// of the whole state (default 1 per CPU, and 1); a stream waits up to
	// SnapshotWait (default 10 s) for a snapshot slot. Over a cap: refused
	// with ResourceExhausted. See ratelimit.go.
	MaxStreams                    int
	MaxStreamsPerCaller           int
	MaxSnapshotTransfers          int
	MaxSnapshotTransfersPerCaller int
	SnapshotWait                  time.Duration
	// WatchWriteTimeout: a change feed stream whose next message cannot
	// be written for this long (a client that stopped reading, with the
	// transport's buffers full) is cut and its resources freed (default
	// 30 s).
	WatchWriteTimeout time.Duration
}

// DefaultRateLimits: a person with a browser or the command line never
// meets them; a program polling in a loop or a flood does, and a portal
// or load generator calling for many people signs in (IdentityFactor) or
// runs against a node with raised limits. The per-address budgets are
// sized so that a flood from a few hundred addresses is admitted at well
// under what one node serves (200 × 2 = 400 queries/s against about
// 4,000/s on a 2-core machine; see TestRateLimitFlood), while a page
// that asks ten questions at once fits the burst. Writes: the sample-data
// import (37 commands) fits the burst.
func DefaultRateLimits() RateLimits {
	return RateLimits{
		Query:              Budget{PerSecond: 5, Burst: 20},
		Write:              Budget{PerSecond: 5, Burst: 50},
		SignIn:             Budget{PerSecond: 0.1, Burst: 5}, // 6 a minute after 5 at once
		Peer:               Budget{PerSecond: 5000, Burst: 10000},
		IdentityFactor:     10,
		MaxTracked:         1 << 16,
		MaxRefusalDelay:    time.Second,
		MaxDelayedRefusals: 4096,

		MaxConcurrentQueries: 4 * runtime.GOMAXPROCS(0),
		MaxQueuedQueries:     1024,

		MaxStreams:                    256,
		MaxStreamsPerCaller:           8,
		MaxSnapshotTransfers:          runtime.GOMAXPROCS(0),
		MaxSnapshotTransfersPerCaller: 1,
		SnapshotWait:                  10 * time.Second,
		WatchWriteTimeout:             30 * time.Second,
	}
}

// Scale multiplies every budget by f (f > 1 raises the limits, e.g. for a
// load test from few addresses).
func (l RateLimits) Scale(f float64) RateLimits {
	for _, b := range []*Budget{&l.Query, &l.Write, &l.SignIn, &l.Peer} {
		b.PerSecond *= f
		b.Burst = int(float64(b.Burst)*f + 0.5)
	}
	return l
}

func (l RateLimits) withDefaults() RateLimits {
	d := DefaultRateLimits()
	for _, p := range []struct{ dst, def *Budget }{{&l.Query, &d.Query}, {&l.Write, &d.Write}, {&l.SignIn, &d.SignIn}, {&l.Peer, &d.Peer}} {
		if *p.dst == (Budget{}) {
			*p.dst = *p.def
		}
	}
	if l.IdentityFactor == 0 {
		l.IdentityFactor = d.IdentityFactor
	}
	if l.MaxTracked == 0 {
		l.MaxTracked = d.MaxTracked
	}
	if l.MaxRefusalDelay == 0 {
		l.MaxRefusalDelay = d.MaxRefusalDelay
	}
	if l.MaxDelayedRefusals == 0 {
		l.MaxDelayedRefusals = d.MaxDelayedRefusals
	}
	if l.MaxConcurrentQueries == 0 {
		l.MaxConcurrentQueries = d.MaxConcurrentQueries
	}
	if l.MaxQueuedQueries == 0 {
		l.MaxQueuedQueries = d.MaxQueuedQueries
	}
	for _, p := range []struct{ dst, def *int }{
		{&l.MaxStreams, &d.MaxStreams}, {&l.MaxStreamsPerCaller, &d.MaxStreamsPerCaller},
		{&l.MaxSnapshotTransfers, &d.MaxSnapshotTransfers}, {&l.MaxSnapshotTransfersPerCaller, &d.MaxSnapshotTransfersPerCaller},
	} {
		if *p.dst == 0 {
			*p.dst = *p.def
		}
	}
	if l.SnapshotWait == 0 {
		l.SnapshotWait = d.SnapshotWait
	}
	if l.WatchWriteTimeout == 0 {
		l.WatchWriteTimeout = d.WatchWriteTimeout
	}
	return l
}

func (l RateLimits) validate() error {
	if l.Off {
		return nil
	}
	var errs []error
	for name, b := range map[string]Budget{"query": l.Query, "write": l.Write, "sign-in": l.SignIn, "peer": l.Peer} {
		if b.PerSecond <= 0 || b.Burst < 1 || math.IsInf(b.PerSecond, 0) || math.IsNaN(b.PerSecond) {
			errs = append(errs, fmt.Errorf("rate limit %s %v: want a positive rate and a burst of at least 1 (or rate limits off)", name, b))
		}
	}
	if l.IdentityFactor < 1 {
		errs = append(errs, fmt.Errorf("rate limit identity factor %g: want at least 1", l.IdentityFactor))
	}
	if l.MaxConcurrentQueries < 1 || l.MaxQueuedQueries < 0 {
		errs = append(errs, fmt.Errorf("rate limit query slots %d (queue %d): want at least 1 slot", l.MaxConcurrentQueries, l.MaxQueuedQueries))
	}
	if l.MaxTracked < 1 {
		errs = append(errs, fmt.Errorf("rate limit table size %d: want at least 1", l.MaxTracked))
	}
	if l.MaxStreams < 1 || l.MaxStreamsPerCaller < 1 || l.MaxSnapshotTransfers < 1 || l.MaxSnapshotTransfersPerCaller < 1 {
		errs = append(errs, fmt.Errorf("stream caps %d (per caller %d), snapshot transfers %d (per caller %d): want at least 1 each",
			l.MaxStreams, l.MaxStreamsPerCaller, l.MaxSnapshotTransfers, l.MaxSnapshotTransfersPerCaller))
	}
	if l.SnapshotWait < 0 || l.WatchWriteTimeout < 0 {
		errs = append(errs, errors.New("snapshot wait and watch write timeout must not be negative"))
	}
	return errors.Join(errs...)
}

// withDefaults fills zero fields from DefaultConfig.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	set := func(dst *time.Duration, v time.Duration) {
		if *dst == 0 {
			*dst = v
		}
	}
	if c.DataDir == "" {
		c.DataDir = d.DataDir
	}
	if c.HTTPAddr == "" {
		c.HTTPAddr = d.HTTPAddr
	}
	if c.RaftAddr == "" {
		c.RaftAddr = d.RaftAddr
	}
	if c.RaftAdvertise == "" {
		c.RaftAdvertise = c.RaftAddr
	}
	if c.NodeID == "" {
		c.NodeID = c.OrgID
	}
	set(&c.HeartbeatTimeout, d.HeartbeatTimeout)
	set(&c.ElectionTimeout, d.ElectionTimeout)
	set(&c.LeaderLeaseTimeout, d.LeaderLeaseTimeout)
	set(&c.CommitTimeout, d.CommitTimeout)
	set(&c.SnapshotInterval, d.SnapshotInterval)
	set(&c.ReadTimeout, d.ReadTimeout)
	set(&c.DeadServerGrace, d.DeadServerGrace)
	set(&c.ReconcileInterval, d.ReconcileInterval)
	if c.Role == "" {
		c.Role = d.Role
	}
	if c.Voters == 0 {
		c.Voters = d.Voters
	}
	if c.SnapshotThreshold == 0 {
		c.SnapshotThreshold = d.SnapshotThreshold
	}
	if c.TrailingLogs == 0 {
		c.TrailingLogs = d.TrailingLogs
	}
	if c.SnapshotThresholdBytes == 0 {
		c.SnapshotThresholdBytes = d.SnapshotThresholdBytes
	}
	if c.SnapshotLogRatio == 0 {
		c.SnapshotLogRatio = d.SnapshotLogRatio
	}
	if c.SnapshotRetain == 0 {
		c.SnapshotRetain = d.SnapshotRetain
	}
	if c.TrailingLogBytes == 0 {
		c.TrailingLogBytes = d.TrailingLogBytes
	}
	if c.MaxRequestBytes == 0 {
		c.MaxRequestBytes = d.MaxRequestBytes
	}
	if c.ReadyMaxLag == 0 {
		c.ReadyMaxLag = d.ReadyMaxLag
	}
	if c.DiskReserveBytes == 0 {
		c.DiskReserveBytes = d.DiskReserveBytes
	}
	c.RateLimits = c.RateLimits.withDefaults()
	set(&c.ExpiryWarnCerts, d.ExpiryWarnCerts)
	set(&c.ExpiryWarnKeys, d.ExpiryWarnKeys)
	set(&c.ExpiryCheckInterval, d.ExpiryCheckInterval)
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	if c.TokenTTL == 0 {
		c.TokenTTL = auth.DefaultTokenTTL
	}
	return c
}

// Validate checks the configuration.
func (c Config) Validate() error {
	var errs []error
	if (c.OIDCIssuer == "") != (c.OIDCClientID == "") {
		errs = append(errs, errors.New("OpenID Connect needs both an issuer and a client id"))
	}
	if !registry.ValidOrgID(c.OrgID) {
		errs = append(errs, fmt.Errorf("org id %q must be a 12-digit ARS or a slug [a-z][a-z0-9-]{2,62}", c.OrgID))
	}
	if c.NodeID == "" || len(c.NodeID) > 64 {
		errs = append(errs, fmt.Errorf("node id %q must be 1-64 characters", c.NodeID))
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("data dir is required"))
	}
	if c.SnapshotRetain < 1 {
		errs = append(errs, fmt.Errorf("snapshot retain %d: at least 1 Raft snapshot must be kept", c.SnapshotRetain))
	}
	for name, a := range map[string]string{"http addr": c.HTTPAddr, "raft addr": c.RaftAddr, "raft advertise": c.RaftAdvertise} {
		if _, _, err := net.SplitHostPort(a); err != nil {
			errs = append(errs, fmt.Errorf("%s %q: %w", name, a, err))
		}
	}
	binds := map[string]string{"http addr": c.HTTPAddr, "gossip addr": c.GossipAddr, "peer addr": c.PeerAddr, "admin addr": c.AdminAddr}
	if c.Role != RoleMember {
		binds["raft addr"] = c.RaftAddr
	}
	for name, a := range binds {
		if a == "" {
			continue
		}
		if err := peertls.CheckBind(a, c.AllowPublic); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		}
	}
	if c.TLS != nil && c.PeerAddr == "" {
		errs = append(errs, errors.New("TLS needs a peer addr for node-to-node API calls"))
	}
	if c.TLS != nil && c.TLS.NodeID() != c.NodeID {
		errs = append(errs, fmt.Errorf("TLS certificate is for node %q, this node is %q", c.TLS.NodeID(), c.NodeID))
	}
	switch c.Role {
	case RoleVoter, RoleReplica, RoleMember:
	default:
		errs = append(errs, fmt.Errorf("role %q must be voter, replica or member", c.Role))
	}
	if c.Voters < 1 || c.Voters > 9 {
		errs = append(errs, fmt.Errorf("voters %d must be 1..9 (3 or 5 recommended)", c.Voters))
	}
	if c.Bootstrap && c.Role != RoleVoter {
		errs = append(errs, errors.New("only a voter can bootstrap"))
	}
	if c.Role == RoleMember && c.GossipAddr == "" {
		errs = append(errs, errors.New("a member needs gossip (gossip addr and join seeds) to find servers"))
	}
	if c.GossipAddr != "" {
		if _, _, err := net.SplitHostPort(c.GossipAddr); err != nil {
			errs = append(errs, fmt.Errorf("gossip addr %q: %w", c.GossipAddr, err))
		}
	}
	for _, k := range c.GossipKeys {
		if l := len(k); l != 16 && l != 24 && l != 32 {
			errs = append(errs, fmt.Errorf("gossip key of %d bytes: want 16, 24 or 32", l))
		}
	}
	if r := c.DiskReserveBytes; r != DiskGuardOff && r < minDiskReserve {
		errs = append(errs, fmt.Errorf("disk reserve %d bytes: want at least %d (1 MiB), or %d to turn the guard off", r, minDiskReserve, DiskGuardOff))
	}
	if err := c.RateLimits.validate(); err != nil {
		errs = append(errs, err)
	}
	if c.ExpiryWarnCerts < 0 || c.ExpiryWarnKeys < 0 || c.ExpiryCheckInterval < 0 {
		errs = append(errs, errors.New("expiry warning windows and check interval must not be negative"))
	}
	if c.Genesis && !c.Bootstrap {
		errs = append(errs, errors.New("genesis needs bootstrap"))
	}
	return errors.Join(errs...)
}

func (c Config) path(parts ...string) string {
	return filepath.Join(append([]string{c.DataDir}, parts...)...)
}
