package cli

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/verbund/verbund/federation/peertls"
	"github.com/verbund/verbund/node"
	"github.com/verbund/verbund/sampledata"
)

// nodeCommand is "verbund node": run a node of the network.
func nodeCommand() Command {
	return Command{
		Name:    "node",
		Summary: "run a node",
		Run:     runNode,
	}
}

// devCommand is "verbund dev": a one-node network with the sample data.
func devCommand() Command {
	return Command{
		Name:    "dev",
		Summary: "run a single-node network with the sample data (what `make run` starts)",
		Run:     runDev,
	}
}

// nodeFlags are the settings a node takes from flags or a YAML config file
// (same names, e.g. `data-dir: /var/lib/verbund`). Flags win over the file.
type nodeFlags struct {
	Org        string `yaml:"org"`
	OrgName    string `yaml:"org-name"`
	NodeID     string `yaml:"node-id"`
	DataDir    string `yaml:"data-dir"`
	HTTPAddr   string `yaml:"http-addr"`
	RaftAddr   string `yaml:"raft-addr"`
	Bootstrap  bool   `yaml:"bootstrap"`
	Genesis    bool   `yaml:"genesis"`
	SampleData bool   `yaml:"sample-data"`
	LogLevel   string `yaml:"log-level"`

	Role          string `yaml:"role"`
	Voters        int    `yaml:"voters"`
	RaftAdvertise string `yaml:"raft-advertise"`
	GossipAddr    string `yaml:"gossip-addr"`
	Join          string `yaml:"join"`
	GossipKeys    string `yaml:"gossip-keys"`
	GossipLabel   string `yaml:"gossip-label"`
	DeadGrace     string `yaml:"dead-server-grace"`
	TLSCA         string `yaml:"tls-ca"`
	TLSCert       string `yaml:"tls-cert"`
	TLSKey        string `yaml:"tls-key"`
	PeerAddr      string `yaml:"peer-addr"`
	AllowPublic   bool   `yaml:"allow-public"`
	AuditInterval string `yaml:"audit-interval"`
	DiskReserveMB int    `yaml:"disk-reserve-mb"`
	AdminAddr     string `yaml:"admin-addr"`

	RateLimits      string  `yaml:"rate-limits"`
	RateLimitScale  float64 `yaml:"rate-limit-scale"`
	RateLimitQuery  string  `yaml:"rate-limit-query"`
	RateLimitWrite  string  `yaml:"rate-limit-write"`
	RateLimitSignIn string  `yaml:"rate-limit-sign-in"`
	RateLimitPeer   string  `yaml:"rate-limit-peer"`
	ExpiryWarnCerts string  `yaml:"expiry-warn-certs"`
	ExpiryWarnKeys  string  `yaml:"expiry-warn-keys"`

	// Stream caps and readiness (ratelimit.go, api_watch.go, health.go).
	WatchStreams          int    `yaml:"watch-streams"`
	WatchStreamsPerCaller int    `yaml:"watch-streams-per-caller"`
	SnapshotTransfers     int    `yaml:"snapshot-transfers"`
	WatchWriteTimeout     string `yaml:"watch-write-timeout"`
	ReadyMaxLag           uint64 `yaml:"ready-max-lag"`

	// The organisation's identity, written by verbund init and sent by
	// verbund join; the node itself does not use them.
	Kind     string `yaml:"kind,omitempty"`
	State    string `yaml:"state,omitempty"`
	ARS      string `yaml:"ars,omitempty"`
	Endpoint string `yaml:"endpoint,omitempty"`
}

func (f *nodeFlags) register(fs *flagSet, d nodeFlags) {
	fs.StringVar(&f.Org, "org", d.Org, "organisation id this node runs for (12-digit ARS or slug)")
	fs.StringVar(&f.OrgName, "org-name", d.OrgName, "organisation name, used at genesis")
	fs.StringVar(&f.NodeID, "node-id", d.NodeID, "node id in Raft and gossip (default: the org id)")
	fs.StringVar(&f.DataDir, "data-dir", d.DataDir, "directory for state, Raft log, snapshots and keys")
	fs.StringVar(&f.HTTPAddr, "http-addr", d.HTTPAddr, "address of the API (Connect, gRPC, gRPC-Web) and web page")
	fs.StringVar(&f.RaftAddr, "raft-addr", d.RaftAddr, "address of the Raft transport")
	fs.BoolVar(&f.Bootstrap, "bootstrap", d.Bootstrap, "start a new one-voter cluster if there is no Raft state")
	fs.BoolVar(&f.Genesis, "genesis", d.Genesis, "register this node's organisation as network operator on an empty registry")
	fs.BoolVar(&f.SampleData, "sample-data", d.SampleData, "import the embedded sample data on first start (with --genesis)")
	fs.StringVar(&f.LogLevel, "log-level", d.LogLevel, "debug, info, warn or error")
	fs.StringVar(&f.Role, "role", d.Role, "voter (may vote in Raft), replica (non-voting Raft copy) or member (read copy from the change feed)")
	fs.IntVar(&f.Voters, "voters", d.Voters, "number of Raft voters the leader keeps (3 or 5)")
	fs.StringVar(&f.RaftAdvertise, "raft-advertise", d.RaftAdvertise, "Raft address other servers dial (default: --raft-addr)")
	fs.StringVar(&f.GossipAddr, "gossip-addr", d.GossipAddr, "gossip (memberlist) bind address; empty: no gossip, a single node")
	fs.StringVar(&f.Join, "join", d.Join, "comma-separated gossip addresses of known nodes to join through")
	fs.StringVar(&f.GossipKeys, "gossip-key", d.GossipKeys, "comma-separated base64 gossip encryption keys, primary first (env VERBUND_GOSSIP_KEY)")
	fs.StringVar(&f.GossipLabel, "gossip-label", d.GossipLabel, "gossip label separating networks")
	fs.StringVar(&f.DeadGrace, "dead-server-grace", d.DeadGrace, "remove a server from Raft after gossip reports it dead this long (e.g. 30s)")
	fs.StringVar(&f.TLSCA, "tls-ca", d.TLSCA, "network CA certificate (PEM): enables mutual TLS for Raft and node-to-node calls")
	fs.StringVar(&f.TLSCert, "tls-cert", d.TLSCert, "this node's certificate (PEM), issued by verbund certs issue")
	fs.StringVar(&f.TLSKey, "tls-key", d.TLSKey, "this node's private key (PEM, mode 0600)")
	fs.StringVar(&f.PeerAddr, "peer-addr", d.PeerAddr, "mTLS listener for node-to-node API calls (with --tls-*)")
	fs.BoolVar(&f.AllowPublic, "allow-public", d.AllowPublic, "allow listening on non-loopback addresses")
	fs.StringVar(&f.AuditInterval, "audit-interval", d.AuditInterval, "how often the handover audit chain head is published to the registry (default 1m)")
	fs.IntVar(&f.DiskReserveMB, "disk-reserve-mb", d.DiskReserveMB, "refuse new writes while the data dir's file system has less than this many MiB free (default 256; -1: off)")
	fs.StringVar(&f.AdminAddr, "admin-addr", d.AdminAddr, "admin listener for operators on this machine: pprof and Prometheus /metrics (default: off)")
	rl := node.DefaultRateLimits()
	fs.StringVar(&f.RateLimits, "rate-limits", d.RateLimits, "on (default) or off: per-caller request budgets; off only for load tests")
	fs.Float64Var(&f.RateLimitScale, "rate-limit-scale", d.RateLimitScale, "multiply every rate limit budget by this factor (e.g. 100 for a load test from few addresses)")
	fs.StringVar(&f.RateLimitQuery, "rate-limit-query", d.RateLimitQuery, "queries per anonymous source address, RATE:BURST per second (default "+budgetFlag(rl.Query)+")")
	fs.StringVar(&f.RateLimitWrite, "rate-limit-write", d.RateLimitWrite, "writes (Publish, case steps, key and user management) per anonymous source address, RATE:BURST (default "+budgetFlag(rl.Write)+")")
	fs.StringVar(&f.RateLimitSignIn, "rate-limit-sign-in", d.RateLimitSignIn, "password sign-ins per source address, RATE:BURST (default "+budgetFlag(rl.SignIn)+")")
	fs.StringVar(&f.RateLimitPeer, "rate-limit-peer", d.RateLimitPeer, "calls per other node on the peer listener, RATE:BURST (default "+budgetFlag(rl.Peer)+")")
	fs.StringVar(&f.ExpiryWarnCerts, "expiry-warn-certs", d.ExpiryWarnCerts, "warn when the node certificate or the network CA expires within this (default 720h)")
	fs.StringVar(&f.ExpiryWarnKeys, "expiry-warn-keys", d.ExpiryWarnKeys, "warn when an organisation key expires within this (default 168h)")
	fs.IntVar(&f.WatchStreams, "watch-streams", d.WatchStreams, fmt.Sprintf("change feed (Watch) streams this node serves at once (default %d)", rl.MaxStreams))
	fs.IntVar(&f.WatchStreamsPerCaller, "watch-streams-per-caller", d.WatchStreamsPerCaller, fmt.Sprintf("Watch streams one caller (address, person or node) may hold open (default %d)", rl.MaxStreamsPerCaller))
	fs.IntVar(&f.SnapshotTransfers, "snapshot-transfers", d.SnapshotTransfers, "Watch streams sending a full snapshot at once (default: one per CPU; one per caller)")
	fs.StringVar(&f.WatchWriteTimeout, "watch-write-timeout", d.WatchWriteTimeout, "cut a Watch stream whose client has not taken a message for this long (default 30s)")
	fs.Uint64Var(&f.ReadyMaxLag, "ready-max-lag", d.ReadyMaxLag, "/readyz fails while the state is more than this many committed Raft entries behind (default 1024)")
}

func budgetFlag(b node.Budget) string { return fmt.Sprintf("%g:%d", b.PerSecond, b.Burst) }

// parseBudget reads RATE:BURST (requests per second, bucket size).
func parseBudget(flag, s string) (node.Budget, error) {
	r, b, ok := strings.Cut(s, ":")
	rate, err1 := strconv.ParseFloat(r, 64)
	burst, err2 := strconv.Atoi(b)
	if !ok || err1 != nil || err2 != nil {
		return node.Budget{}, fmt.Errorf("--%s %q: want RATE:BURST, e.g. 20:40", flag, s)
	}
	return node.Budget{PerSecond: rate, Burst: burst}, nil
}

// rateLimits applies the rate limit and expiry warning flags to cfg.
func (f nodeFlags) rateLimits(cfg *node.Config) error {
	switch f.RateLimits {
	case "", "on":
	case "off":
		cfg.RateLimits.Off = true
	default:
		return fmt.Errorf("--rate-limits %q: want on or off", f.RateLimits)
	}
	for _, b := range []struct {
		flag, val string
		dst       *node.Budget
	}{
		{"rate-limit-query", f.RateLimitQuery, &cfg.RateLimits.Query},
		{"rate-limit-write", f.RateLimitWrite, &cfg.RateLimits.Write},
		{"rate-limit-sign-in", f.RateLimitSignIn, &cfg.RateLimits.SignIn},
		{"rate-limit-peer", f.RateLimitPeer, &cfg.RateLimits.Peer},
	} {
		if b.val == "" {
			continue
		}
		v, err := parseBudget(b.flag, b.val)
		if err != nil {
			return err
		}
		*b.dst = v
	}
	if f.RateLimitScale != 0 {
		if f.RateLimitScale < 0 {
			return fmt.Errorf("--rate-limit-scale %g: want a positive factor", f.RateLimitScale)
		}
		cfg.RateLimits = cfg.RateLimits.Scale(f.RateLimitScale)
	}
	for _, c := range []struct {
		flag string
		val  int
		dst  *int
	}{
		{"watch-streams", f.WatchStreams, &cfg.RateLimits.MaxStreams},
		{"watch-streams-per-caller", f.WatchStreamsPerCaller, &cfg.RateLimits.MaxStreamsPerCaller},
		{"snapshot-transfers", f.SnapshotTransfers, &cfg.RateLimits.MaxSnapshotTransfers},
	} {
		if c.val < 0 {
			return fmt.Errorf("--%s %d: want a positive number", c.flag, c.val)
		}
		if c.val > 0 {
			*c.dst = c.val
		}
	}
	if f.ReadyMaxLag > 0 {
		cfg.ReadyMaxLag = f.ReadyMaxLag
	}
	for _, d := range []struct {
		flag, val string
		dst       *time.Duration
	}{{"expiry-warn-certs", f.ExpiryWarnCerts, &cfg.ExpiryWarnCerts}, {"expiry-warn-keys", f.ExpiryWarnKeys, &cfg.ExpiryWarnKeys},
		{"watch-write-timeout", f.WatchWriteTimeout, &cfg.RateLimits.WatchWriteTimeout}} {
		if d.val == "" {
			continue
		}
		v, err := time.ParseDuration(d.val)
		if err != nil {
			return fmt.Errorf("--%s: %w", d.flag, err)
		}
		*d.dst = v
	}
	return nil
}

func (f nodeFlags) config(stderr interface{ Write([]byte) (int, error) }) (node.Config, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(f.LogLevel)); err != nil {
		return node.Config{}, fmt.Errorf("--log-level: %w", err)
	}
	cfg := node.DefaultConfig()
	cfg.OrgID, cfg.OrgName, cfg.NodeID = f.Org, f.OrgName, f.NodeID
	cfg.DataDir, cfg.HTTPAddr, cfg.RaftAddr = f.DataDir, f.HTTPAddr, f.RaftAddr
	cfg.Bootstrap, cfg.Genesis = f.Bootstrap, f.Genesis
	cfg.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl}))
	if f.Role != "" {
		cfg.Role = f.Role
	}
	if f.Voters != 0 {
		cfg.Voters = f.Voters
	}
	cfg.RaftAdvertise, cfg.GossipAddr, cfg.GossipLabel = f.RaftAdvertise, f.GossipAddr, f.GossipLabel
	cfg.PeerAddr, cfg.AllowPublic, cfg.AdminAddr = f.PeerAddr, f.AllowPublic, f.AdminAddr
	if err := f.rateLimits(&cfg); err != nil {
		return cfg, err
	}
	for _, j := range strings.Split(f.Join, ",") {
		if j = strings.TrimSpace(j); j != "" {
			cfg.Join = append(cfg.Join, j)
		}
	}
	keys := f.GossipKeys
	if keys == "" {
		keys = os.Getenv("VERBUND_GOSSIP_KEY")
	}
	for _, k := range strings.Split(keys, ",") {
		if k = strings.TrimSpace(k); k == "" {
			continue
		}
		b, err := base64.StdEncoding.DecodeString(k)
		if err != nil {
			return cfg, fmt.Errorf("--gossip-key: not base64: %w", err)
		}
		cfg.GossipKeys = append(cfg.GossipKeys, b)
	}
	if f.DeadGrace != "" {
		d, err := time.ParseDuration(f.DeadGrace)
		if err != nil {
			return cfg, fmt.Errorf("--dead-server-grace: %w", err)
		}
		cfg.DeadServerGrace = d
	}
	if f.AuditInterval != "" {
		d, err := time.ParseDuration(f.AuditInterval)
		if err != nil {
			return cfg, fmt.Errorf("--audit-interval: %w", err)
		}
		cfg.AuditInterval = d
	}
	switch {
	case f.DiskReserveMB == -1:
		cfg.DiskReserveBytes = node.DiskGuardOff
	case f.DiskReserveMB != 0:
		cfg.DiskReserveBytes = int64(f.DiskReserveMB) << 20 // Validate refuses < 1 MiB
	}
	if f.TLSCA != "" || f.TLSCert != "" || f.TLSKey != "" {
		b, err := peertls.Load(peertls.Files{CAFile: f.TLSCA, CertFile: f.TLSCert, KeyFile: f.TLSKey})
		if err != nil {
			return cfg, fmt.Errorf("TLS: %w", err)
		}
		cfg.TLS = b
	}
	return cfg, nil
}

func defaultNodeFlags() nodeFlags {
	d := node.DefaultConfig()
	return nodeFlags{DataDir: d.DataDir, HTTPAddr: d.HTTPAddr, RaftAddr: d.RaftAddr, LogLevel: "info"}
}

// readConfigFile reads a YAML config file (keys: the flags' names; an
// unknown key is an error) over the defaults in d.
func readConfigFile(path string, d *nodeFlags) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(d); err != nil {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	return nil
}

func runNode(ctx context.Context, env *Env, args []string) error {
	// A config file sets the defaults the flags then override.
	d := defaultNodeFlags()
	for i, a := range args {
		var path string
		switch {
		case a == "--config" || a == "-config":
			if i+1 < len(args) {
				path = args[i+1]
			}
		case strings.HasPrefix(a, "--config=") || strings.HasPrefix(a, "-config="):
			path = a[strings.IndexByte(a, '=')+1:]
		}
		if path != "" {
			if err := readConfigFile(path, &d); err != nil {
				return err
			}
		}
	}
	var f nodeFlags
	fs := newFlagSet("node [flags]", "Run a node of the Verbund network.")
	fs.String("config", "", "YAML file with the settings below (flags override it)")
	f.register(fs, d)
	if _, err := fs.parse(env, args, 0, 0, ""); err != nil {
		return err
	}
	cfg, err := f.config(env.Stderr)
	if err != nil {
		return fs.usageErr("%v", err)
	}
	if f.SampleData && !f.Genesis {
		return errors.New("config: sample data is loaded by the genesis node only")
	}
	return serve(ctx, env, cfg, f.SampleData)
}

func runDev(ctx context.Context, env *Env, args []string) error {
	d := defaultNodeFlags()
	d.DataDir = ".verbund/dev"
	d.Org = "verbund-dev"
	d.OrgName = "Verbund development network operator"
	var f nodeFlags
	var noSample bool
	fs := newFlagSet("dev [flags]", "Run a single-node network (one Raft voter, this node the network operator) with the sample data.")
	f.register(fs, d)
	fs.BoolVar(&noSample, "no-sample-data", false, "do not import the sample data")
	if _, err := fs.parse(env, args, 0, 0, ""); err != nil {
		return err
	}
	f.Bootstrap, f.Genesis, f.SampleData = true, true, !noSample
	cfg, err := f.config(env.Stderr)
	if err != nil {
		return fs.usageErr("%v", err)
	}
	return serve(ctx, env, cfg, f.SampleData)
}

// serve runs a node until ctx is cancelled (SIGINT/SIGTERM). With
// sampleData (a genesis node only), it loads the sample data through the
// node once Start has registered the operator, before it reports the node
// running.
func serve(ctx context.Context, env *Env, cfg node.Config, sampleData bool) error {
	n, err := node.New(cfg)
	if err != nil {
		return err
	}
	if err := n.Start(ctx); err != nil {
		_ = n.Close()
		return err
	}
	c := n.Config()
	if sampleData && n.Resumed() && !n.SoleVoter() {
		// A restart in a cluster: the data was loaded on the first start;
		// checking it again needs a leader, which a restarted cluster
		// elects only once enough voters run. Do it in the background, not
		// before the node reports running (other voters may be waiting for
		// this one). A one-node network elects itself: it checks before it
		// reports running, as on the first start.
		log := c.Logger.With("node", c.NodeID)
		go func() {
			for delay := 2 * time.Second; ctx.Err() == nil; delay = min(2*delay, time.Minute) {
				err := loadSampleData(ctx, log, n, n.Reader(), c.DataDir, c.OrgID, n.SigningKey())
				if err == nil || ctx.Err() != nil {
					return
				}
				log.Warn("sample data check after restart failed; retrying", "err", err, "in", delay)
				select {
				case <-ctx.Done():
				case <-time.After(delay):
				}
			}
		}()
	} else if sampleData {
		log := c.Logger.With("node", c.NodeID)
		if err := loadSampleData(ctx, log, n, n.Reader(), c.DataDir, c.OrgID, n.SigningKey()); err != nil {
			_ = n.Close()
			return err
		}
	}
	fmt.Fprintf(env.Stdout, "Verbund node %s (organisation %s) is running.\n", c.NodeID, c.OrgID)
	fmt.Fprintf(env.Stdout, "  API (Connect, gRPC, gRPC-Web): %s\n", n.APIURL())
	fmt.Fprintf(env.Stdout, "  Web page:                      %s/\n", n.APIURL())
	if a := n.RaftAddr(); a != "" {
		fmt.Fprintf(env.Stdout, "  Raft:                          %s\n", a)
	}
	if n.Resumed() {
		fmt.Fprintf(env.Stdout, "  Resumed:                       Raft state found in the data dir; rejoining its configuration (bootstrap, genesis and sample data act on a fresh data dir only)\n")
	}
	if c.GossipAddr != "" {
		fmt.Fprintf(env.Stdout, "  Gossip:                        %s (role %s)\n", c.GossipAddr, c.Role)
	}
	if n.PeerURL() != n.APIURL() {
		fmt.Fprintf(env.Stdout, "  Peer API (mTLS):               %s\n", n.PeerURL())
	}
	fmt.Fprintf(env.Stdout, "  Data dir:                      %s\n", c.DataDir)
	fmt.Fprintf(env.Stdout, "Try: bin/verbund providers --addr %s --service 99050012104000 --area 091620000000\n", n.APIURL())
	fmt.Fprintf(env.Stdout, "     bin/verbund services search umzug --addr %s\n", n.APIURL())
	if sampleData {
		fmt.Fprintf(env.Stdout, "     bin/verbund providers --service %s --area %s --verify --addr %s   # a delegated provider (synthetic)\n",
			sampledata.DelegatedLeiKa, sampledata.DelegatedARS, n.APIURL())
	}
	fmt.Fprintf(env.Stdout, "Stop with Ctrl-C.\n")
	<-ctx.Done()
	fmt.Fprintln(env.Stdout, "shutting down")
	done := make(chan error, 1)
	go func() { done <- n.Close() }()
	select {
	case err := <-done:
		return err
	case <-time.After(30 * time.Second):
		return errors.New("shutdown timed out")
	}
}
