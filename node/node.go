package node

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
	jose "github.com/go-jose/go-jose/v4"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"

	"github.com/verbund/verbund/federation/handover"
	"github.com/verbund/verbund/federation/membership"
	"github.com/verbund/verbund/federation/peertls"
	"github.com/verbund/verbund/internal/badgercheck"
	"github.com/verbund/verbund/internal/badgerlog"
	"github.com/verbund/verbund/internal/storeformat"
	"github.com/verbund/verbund/keys"
	"github.com/verbund/verbund/node/auth"
	"github.com/verbund/verbund/node/diskspace"
	"github.com/verbund/verbund/node/raftlog"
	"github.com/verbund/verbund/registry"
)

// Version is the node software version.
var Version = buildVersion(release, readBuildInfo())

// release is the version of this source tree.
const release = "0.1.0-dev"

// readBuildInfo is debug.ReadBuildInfo's answer (nil if there is none).
func readBuildInfo() *debug.BuildInfo {
	bi, _ := debug.ReadBuildInfo()
	return bi
}

// buildVersion is the version a node reports: the release and, for a
// binary built from a git checkout, its short source revision
// ("0.1.0-dev+a982a7a", "+…-dirty" for uncommitted changes), so that
// "verbund members" tells apart the nodes of a rolling upgrade.
func buildVersion(release string, bi *debug.BuildInfo) string {
	if bi == nil {
		return release
	}
	var rev string
	var dirty bool
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev == "" {
		return release
	}
	v := release + "+" + rev[:min(7, len(rev))]
	if dirty {
		v += "-dirty"
	}
	return v
}

// Node is one running node. Create with New, then Start; Close stops it.
type Node struct {
	cfg Config
	log *slog.Logger

	keys     orgKeyring // current keys; swapped on rotation
	rotateMu sync.Mutex

	db        *badger.DB
	logStore  *raftlog.Store        // the Raft log and stable store (term, vote)
	logs      raft.LogStore         // logStore behind a cache of recent entries
	logBytes  atomic.Uint64         // bytes of entries appended to the log (snapshotbytes.go)
	logBytesC chan struct{}         // signalled after each append
	snaps     *checkedSnapshotStore // raft.FileSnapshotStore with checksummed meta.json
	trans     *raft.NetworkTransport
	raft      *raft.Raft
	fsm       *registry.FSM      // servers (voter, replica)
	feedCopy  *registry.FeedCopy // members
	reader    *registry.Reader
	writer    *registry.Writer
	admission *registry.Admission // servers: the write path on the leader
	state     stateIndex
	disk      *diskspace.Guard // refuses new writes on a full disk (nil: off)

	limiter atomic.Pointer[rateLimiter] // per-caller request budgets (nil: off)
	metrics *metrics                    // served on the admin listener

	hoDB     *badger.DB
	handover *handover.Service

	users *auth.Store // this node's people (access.go, api_auth.go)
	oidc  *auth.OIDC  // the organisation's identity provider (nil: none)

	gossip   *membership.Membership
	peers    *peerClients
	lastFeed atomic.Int64 // members: unix ms of the last change feed message

	httpLn  net.Listener // public API
	httpSrv *http.Server
	// publicAPI is the public listener's guarded handler; the web pages
	// call the API through it (pages.go).
	publicAPI http.Handler
	peerLn    net.Listener // mutual TLS, other nodes
	peerSrv   *http.Server
	adminLn   net.Listener // operators on this machine
	adminSrv  *http.Server

	readyTerm atomic.Uint64 // term in which a leader barrier completed
	readyMu   sync.Mutex

	started time.Time
	resumed bool      // Raft state existed at start: bootstrap and genesis do not wait (genesis.go)
	book    *peerBook // other nodes' addresses as last gossiped, kept across restarts (forward.go)
	cancel  context.CancelFunc
	runCtx  context.Context
	wg      sync.WaitGroup
	closed  atomic.Bool
}

// New opens the node's storage and keys. Nothing listens until Start.
func New(cfg Config) (*Node, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	n := &Node{cfg: cfg, log: cfg.Logger.With("node", cfg.NodeID)}
	n.metrics = newMetrics(n)
	if !cfg.RateLimits.Off {
		n.limiter.Store(newRateLimiter(cfg.RateLimits, n.metrics))
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	var err error
	if n.disk, err = newDiskGuard(cfg); err != nil {
		return nil, err
	}
	sig, created, err := keys.LoadOrGenerate(n.keyPath(signingFile), keys.GenerateSigning, cfg.OrgID+"-sig")
	if err != nil {
		return nil, err
	}
	if created {
		n.log.Info("generated signing key", "kid", sig.KeyID)
	}
	enc, _, err := keys.LoadOrGenerate(n.keyPath(encryptionFile), keys.GenerateEncryption, cfg.OrgID+"-enc")
	if err != nil {
		return nil, err
	}
	oldEnc, err := n.loadArchivedEncKeys()
	if err != nil {
		return nil, err
	}
	n.keys.store(&orgKeys{sig: sig, enc: enc, oldEnc: oldEnc})
	if err := n.openStorage(); err != nil {
		n.closeStorage()
		return nil, err
	}
	if err := n.openUsers(); err != nil {
		n.closeStorage()
		return nil, err
	}
	return n, nil
}

// openUsers opens the node's user store (DataDir/users) and, if it has no
// user at all, creates "admin" with a random password written to
// DataDir/initial-admin-password (0600); the log says where, never what.
func (n *Node) openUsers() error {
	if err := n.prepareStore(formatUsers, auth.Dir(n.cfg.DataDir)); err != nil {
		return err
	}
	users, err := auth.Open(auth.Dir(n.cfg.DataDir), n.log, n.cfg.Clock)
	if err != nil {
		return err
	}
	n.users = users
	if n.cfg.OIDCIssuer != "" {
		n.oidc = auth.NewOIDC(n.cfg.OIDCIssuer, n.cfg.OIDCClientID, n.cfg.OIDCHTTPClient, n.cfg.Clock)
	}
	path, err := auth.EnsureInitialAdmin(users, n.cfg.DataDir)
	if err != nil {
		return fmt.Errorf("initial admin: %w", err)
	}
	if path != "" {
		n.log.Warn("created the initial user \"admin\"; its password is in a file readable by this user only: sign in, then change it (verbund users reset admin)", "file", path)
	}
	return nil
}

func (n *Node) openStorage() error {
	if err := n.prepareStore(formatState, n.cfg.path("state")); err != nil {
		if errors.Is(err, storeformat.ErrTooNew) {
			return err
		}
		// A damaged marker, or another store: the state is derived.
		return fmt.Errorf("%w (the registry state is derived: move %s aside and restart to rebuild it from the Raft snapshot and log)", err, n.cfg.path("state"))
	}
	opts := badger.DefaultOptions(n.cfg.path("state")).
		WithLogger(badgerlog.New(n.log, "badger")).
		WithSyncWrites(false). // the Raft log is the durable copy; see registry.FSM
		WithNumVersionsToKeep(1).
		WithCompactL0OnClose(true).
		WithChecksumVerificationMode(options.OnBlockRead). // and badgercheck verifies every table at open
		WithVerifyValueChecksum(true)
	db, err := badgercheck.Open(opts) // a flipped byte is an error, never data
	if err != nil {
		return fmt.Errorf("open state db %s: %w (the registry state is derived: move %[1]s aside and restart to rebuild it from the Raft snapshot and log)", n.cfg.path("state"), err)
	}
	n.db = db
	n.reader = registry.NewReader(db)
	if n.cfg.Role == RoleMember {
		if n.feedCopy, err = registry.NewFeedCopy(db); err != nil {
			return err
		}
		n.state = n.feedCopy
		return nil
	}
	fsmCfg := n.cfg.FSM
	fsmCfg.Logger = n.log
	if n.fsm, err = registry.NewFSM(db, fsmCfg); err != nil {
		return err
	}
	n.state = n.fsm
	if err := n.prepareStore(formatRaft, n.cfg.path("raft")); err != nil {
		return err
	}
	if err := n.openRaftLog(); err != nil {
		return err
	}
	fileSnaps, err := raft.NewFileSnapshotStoreWithLogger(n.cfg.path("raft"), n.cfg.SnapshotRetain, n.hclog("snapshot"))
	if err != nil {
		return fmt.Errorf("open snapshot store: %w", err)
	}
	n.snaps = newCheckedSnapshotStore(fileSnaps, n.cfg.path("raft"), n.log)
	if err := n.checkSnapshots(); err != nil {
		return err
	}
	return n.checkRaftLog()
}

func (n *Node) closeStorage() {
	if n.users != nil {
		_ = n.users.Close()
	}
	if n.logStore != nil {
		_ = n.logStore.Close()
	}
	if n.db != nil {
		_ = n.db.Close()
	}
}

func (n *Node) hclog(name string) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Name: name, Level: hclog.Warn, Output: os.Stderr})
}

// Start starts Raft and the API, then (on a bootstrap node with Genesis)
// registers the network operator. It returns once the API listens.
func (n *Node) Start(ctx context.Context) error {
	n.started = time.Now()
	hc := n.cfg.PeerHTTPClient
	if hc == nil && n.cfg.TLS != nil {
		hc = n.cfg.TLS.HTTPClient()
	}
	if hc == nil {
		hc = http.DefaultClient
	}
	n.peers = newPeerClients(hc)
	n.book = loadPeerBook(n.cfg.DataDir, n.log)
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	n.cancel, n.runCtx = cancel, runCtx
	if n.isServer() {
		if err := n.startRaft(); err != nil {
			return err
		}
		n.wg.Add(3)
		go func() { defer n.wg.Done(); n.writer.Run(runCtx) }()
		go func() { defer n.wg.Done(); n.watchLeadership(runCtx) }()
		go func() { defer n.wg.Done(); n.snapshotBytesLoop(runCtx) }()
	}
	if err := n.listen(); err != nil {
		return err
	}
	if err := n.startGossip(runCtx); err != nil {
		return err
	}
	if err := n.startHandover(runCtx); err != nil {
		return err
	}
	n.serveHTTP()
	n.wg.Add(2)
	go func() { defer n.wg.Done(); n.resolvePendingKeys(runCtx) }()
	go func() { defer n.wg.Done(); n.expiryLoop(runCtx) }()
	if n.isServer() && n.gossip != nil {
		n.wg.Add(1)
		go func() { defer n.wg.Done(); n.reconcileLoop(runCtx) }()
	}
	if n.isServer() {
		n.wg.Add(1)
		go func() { defer n.wg.Done(); n.featureLoop(runCtx) }()
	}
	if !n.isServer() {
		n.wg.Add(1)
		go func() { defer n.wg.Done(); n.followLoop(runCtx) }()
	}
	n.log.Info("node started", "role", n.cfg.Role, "api", n.APIURL(), "raft", n.cfg.RaftAdvertise, "gossip", n.cfg.GossipAddr, "org", n.cfg.OrgID, "applied", n.state.AppliedIndex())
	if n.gossip != nil {
		n.wg.Add(1)
		go func() { defer n.wg.Done(); n.peerBookLoop(runCtx) }()
	}
	if n.cfg.Genesis {
		if err := n.startGenesis(ctx, runCtx); err != nil {
			return err
		}
	}
	return nil
}

func (n *Node) startRaft() error {
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(n.cfg.NodeID)
	rc.HeartbeatTimeout = n.cfg.HeartbeatTimeout
	rc.ElectionTimeout = n.cfg.ElectionTimeout
	rc.LeaderLeaseTimeout = n.cfg.LeaderLeaseTimeout
	rc.CommitTimeout = n.cfg.CommitTimeout
	rc.SnapshotThreshold = n.cfg.SnapshotThreshold
	rc.SnapshotInterval = n.cfg.SnapshotInterval
	rc.TrailingLogs = n.cfg.TrailingLogs
	rc.BatchApplyCh = true
	rc.MaxAppendEntries = 256
	rc.Logger = n.hclog("raft")
	// The FSM is persistent: if it already reflects the latest snapshot, do
	// not wipe it with that snapshot on start; Raft replays only newer logs
	// and the FSM skips what it has.
	if snaps, err := n.snaps.List(); err == nil && len(snaps) > 0 && n.fsm.AppliedIndex() >= snaps[0].Index {
		rc.NoSnapshotRestoreOnStart = true
	}
	addr, err := net.ResolveTCPAddr("tcp", n.cfg.RaftAdvertise)
	if err != nil {
		return fmt.Errorf("raft advertise address: %w", err)
	}
	if n.cfg.TLS != nil {
		n.trans, err = peertls.NewRaftTransport(n.cfg.RaftAddr, n.cfg.RaftAdvertise, n.cfg.TLS, 8, 10*time.Second, n.hclog("raft-net"),
			peertls.WithAllowPublic(n.cfg.AllowPublic))
	} else {
		n.trans, err = raft.NewTCPTransportWithLogger(n.cfg.RaftAddr, addr, 8, 10*time.Second, n.hclog("raft-net"))
	}
	if err != nil {
		return fmt.Errorf("raft transport: %w", err)
	}
	var trans raft.Transport = n.trans
	if n.cfg.WrapRaftTransport != nil {
		trans = n.cfg.WrapRaftTransport(trans)
	}
	has, err := raft.HasExistingState(n.logs, n.logStore, n.snaps)
	if err != nil {
		return fmt.Errorf("raft state: %w", err)
	}
	n.resumed = has
	if n.cfg.Bootstrap {
		if !has {
			conf := raft.Configuration{Servers: []raft.Server{{ID: rc.LocalID, Address: n.trans.LocalAddr(), Suffrage: raft.Voter}}}
			if err := raft.BootstrapCluster(rc, n.logs, n.logStore, n.snaps, trans, conf); err != nil {
				return fmt.Errorf("bootstrap raft: %w", err)
			}
			n.log.Info("bootstrapped a new one-voter cluster")
		}
	}
	n.logBytesC = make(chan struct{}, 1)
	logs := countedLogs{LogStore: guardLogs(n.logs, n.disk), n: &n.logBytes, notify: n.logBytesC} // snapshotbytes.go
	if n.raft, err = raft.NewRaft(rc, timedFSM{n.fsm, n.metrics.applySeconds}, logs, n.logStore, n.snaps, trans); err != nil {
		return fmt.Errorf("start raft: %w", err)
	}
	wcfg := n.cfg.Writer
	wcfg.Logger = n.log
	if wcfg.Now == nil {
		wcfg.Now = n.cfg.Clock
	}
	n.writer = registry.NewWriter(n.raft, wcfg)
	n.admission = registry.NewAdmission(n.fsm, n.writer)
	n.admission.Gate = n.checkDisk
	return nil
}

// watchLeadership logs leadership changes. Linearizable reads need no reset
// here: they check that the barrier they rely on ran in the current term.
func (n *Node) watchLeadership(ctx context.Context) {
	ch := n.raft.LeaderCh()
	for {
		select {
		case isLeader := <-ch:
			n.log.Info("leadership changed", "leader", isLeader)
		case <-ctx.Done():
			return
		}
	}
}

// listen opens the listeners (see access.go), so their addresses are known
// (gossip announces them) before anything is served.
func (n *Node) listen() error {
	ln, err := net.Listen("tcp", n.cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", n.cfg.HTTPAddr, err)
	}
	n.httpLn = ln
	if n.cfg.TLS != nil {
		if n.peerLn, err = net.Listen("tcp", n.cfg.PeerAddr); err != nil {
			return fmt.Errorf("listen on %s: %w", n.cfg.PeerAddr, err)
		}
	}
	if n.cfg.AdminAddr != "" {
		if n.adminLn, err = net.Listen("tcp", n.cfg.AdminAddr); err != nil {
			return fmt.Errorf("listen on %s: %w", n.cfg.AdminAddr, err)
		}
	}
	return nil
}

// serveHTTP serves the listeners opened by listen, each behind the access
// policy for that listener.
func (n *Node) serveHTTP() {
	api := n.routes()
	n.publicAPI = n.guard(publicListener, api)
	if n.cfg.PublicTLS != nil {
		n.httpSrv = n.serve(n.httpLn, n.publicAPI, n.cfg.PublicTLS)
	} else {
		n.httpSrv = n.serve(n.httpLn, h2c.NewHandler(n.publicAPI, &http2.Server{}), nil)
	}
	if n.peerLn != nil {
		n.peerSrv = n.serve(n.peerLn, n.guard(peerListener, api), n.cfg.TLS.ServerConfig())
	}
	if n.adminLn != nil {
		n.adminSrv = n.serve(n.adminLn, n.guard(adminListener, n.adminRoutes()), nil)
	}
}

func (n *Node) serve(ln net.Listener, h http.Handler, tlsConfig *tls.Config) *http.Server {
	srv := &http.Server{
		Handler:           h,
		TLSConfig:         tlsConfig,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(n.log.Handler(), slog.LevelWarn),
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		var err error
		if tlsConfig != nil {
			err = srv.ServeTLS(ln, "", "")
		} else {
			err = srv.Serve(ln)
		}
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.log.Error("http server", "addr", ln.Addr().String(), "err", err)
		}
	}()
	return srv
}

// PeerURL is the address other nodes use for API calls: the mTLS peer
// listener with TLS, else the public API.
func (n *Node) PeerURL() string {
	if n.peerLn != nil {
		return "https://" + n.peerLn.Addr().String()
	}
	return n.APIURL()
}

// AdminURL is the base URL of the admin listener ("" when off).
func (n *Node) AdminURL() string {
	if n.adminLn == nil {
		return ""
	}
	return "http://" + n.adminLn.Addr().String()
}

// APIURL is the base URL of the API.
func (n *Node) APIURL() string {
	if n.httpLn == nil {
		return ""
	}
	if n.cfg.PublicTLS != nil {
		return "https://" + n.httpLn.Addr().String()
	}
	return "http://" + n.httpLn.Addr().String()
}

// RaftAddr is the Raft transport's address ("" on a member).
func (n *Node) RaftAddr() string {
	if n.trans == nil {
		return ""
	}
	return string(n.trans.LocalAddr())
}

// isServer reports whether the node holds Raft state (voter or replica).
func (n *Node) isServer() bool { return n.cfg.Role != RoleMember }

// AppliedIndex is the index the node's registry state reflects.
func (n *Node) AppliedIndex() uint64 { return n.state.AppliedIndex() }

// stateIndex is what reads need of the local state: the FSM on a server,
// the feed copy on a member.
type stateIndex interface {
	AppliedIndex() uint64
	WaitApplied(ctx context.Context, index uint64) error
}

// Raft exposes the Raft instance (tests, cluster management).
func (n *Node) Raft() *raft.Raft { return n.raft }

// FSM exposes the registry state machine.
func (n *Node) FSM() *registry.FSM { return n.fsm }

// Reader answers registry queries from the local state.
func (n *Node) Reader() *registry.Reader { return n.reader }

// SigningKey is this node's organisation signing key.
func (n *Node) SigningKey() jose.JSONWebKey { return n.keys.SigningKey() }

// Config returns the effective configuration.
func (n *Node) Config() Config { return n.cfg }

// Close stops the API, Raft and storage. A voter that is the leader hands
// leadership over first when other voters exist.
func (n *Node) Close() error { return n.close(true) }

// Kill stops the node without handing over leadership or leaving gossip
// gracefully: in tests, the in-process stand-in for a crash (the e2e tests
// use real processes and SIGKILL).
func (n *Node) Kill() error { return n.close(false) }

func (n *Node) close(graceful bool) error {
	if !n.closed.CompareAndSwap(false, true) {
		return nil
	}
	var errs []error
	// A leader hands over first (graceful only), then Raft stops, so no
	// request is served from a node that is going away.
	if n.raft != nil {
		if graceful && n.raft.State() == raft.Leader && len(n.voters()) > 1 {
			if err := n.raft.LeadershipTransfer().Error(); err != nil {
				n.log.Warn("leadership transfer before shutdown failed", "err", err)
			}
		}
		errs = append(errs, n.raft.Shutdown().Error())
	}
	if n.cancel != nil {
		n.cancel() // stops loops and change feed streams
	}
	if n.httpSrv != nil {
		wait := time.Second
		if !graceful {
			wait = 0
		}
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		if err := n.httpSrv.Shutdown(ctx); err != nil {
			_ = n.httpSrv.Close() // long-lived streams: cut them
		}
		cancel()
	}
	for _, srv := range []*http.Server{n.peerSrv, n.adminSrv} {
		if srv != nil {
			_ = srv.Close()
		}
	}
	for _, l := range []struct {
		ln  net.Listener
		srv *http.Server
	}{{n.httpLn, n.httpSrv}, {n.peerLn, n.peerSrv}, {n.adminLn, n.adminSrv}} {
		if l.srv == nil && l.ln != nil {
			_ = l.ln.Close() // opened, never served (Start failed)
		}
	}
	if n.gossip != nil {
		errs = append(errs, n.gossip.Shutdown())
	}
	if n.trans != nil {
		errs = append(errs, n.trans.Close())
	}
	n.wg.Wait()
	if n.handover != nil {
		errs = append(errs, n.handover.Close())
	}
	if n.hoDB != nil {
		errs = append(errs, n.hoDB.Close())
	}
	n.closeStorage()
	n.log.Info("node stopped")
	return errors.Join(errs...)
}

func (n *Node) voters() []raft.Server {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return nil
	}
	var out []raft.Server
	for _, s := range f.Configuration().Servers {
		if s.Suffrage == raft.Voter {
			out = append(out, s)
		}
	}
	return out
}
