package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	clientv3 "go.etcd.io/etcd/client/v3"
	healthv1 "google.golang.org/grpc/health/grpc_health_v1"

	federationv1 "github.com/verbund/verbund/proto/gen/verbund/federation/v1"
	"github.com/verbund/verbund/proto/gen/verbund/federation/v1/federationv1connect"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
	"github.com/verbund/verbund/proto/gen/verbund/registry/v1/registryv1connect"
)

// Config is one benchmark run.
type Config struct {
	Root     string        // the checkout (scripts/cluster.sh, bin/verbund)
	Bin      string        // bin/verbund built from the checkout
	EtcdBin  string        // /usr/bin/etcd
	Dir      string        // scratch dir for both clusters' data
	Duration time.Duration // per row and side
	Smoke    bool          // fewer clients, shorter setup
	// MaxWriteRate caps the number of commands pre-signed per write row:
	// MaxWriteRate x Duration (a row ends early when they run out).
	MaxWriteRate int
	Log          io.Writer // progress lines
	// ProfileDir, if set, receives CPU profiles of the leader and of the
	// follower taken from their admin listeners during each Verbund write
	// row (<row tag>-<leader|follower>.pprof).
	ProfileDir string
}

// Row is one line of the table.
type Row struct {
	Work    string
	Clients int
	Verbund *Result
	Etcd    *Result
	// EtcdWork names etcd's side ("put", "serializable get").
	EtcdWork string
	// Bound is a computed throughput bound (ops/s) the Verbund side is
	// compared with where there is no etcd side, BoundWhat says what it is.
	Bound     float64
	BoundWhat string
	// SigBound is the signature-check bound for write rows (0: not a write).
	SigBound float64
}

// Ratio is Verbund's rate over etcd's (or over the bound); 0 if neither.
func (r Row) Ratio() float64 {
	if r.Verbund == nil || r.Verbund.Rate() == 0 {
		return 0
	}
	if r.Etcd != nil && r.Etcd.Rate() > 0 {
		return r.Verbund.Rate() / r.Etcd.Rate()
	}
	if r.Bound > 0 {
		return r.Verbund.Rate() / r.Bound
	}
	return 0
}

// Report is everything one run measured.
type Report struct {
	Rows        []Row
	Crypto      CryptoCosts
	NullRPCCPU  time.Duration // machine CPU time per null RPC (client and server)
	Verifiers   int           // signature checks per write across the cluster
	SigBound    float64       // writes/s bound from signature checks
	HandoverBnd float64       // handovers/s bound from crypto + RPC cost
	EtcdVersion string
	Started     time.Time
	Elapsed     time.Duration
	Notes       []string
	Gossip      []GossipResult
	GossipModel []GossipProjection
}

func (c *Config) logf(format string, args ...any) {
	if c.Log != nil {
		fmt.Fprintf(c.Log, "[%s] %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
	}
}

// progressLine prints one finished measurement.
func (c *Config) progress(side, work string, r Result) {
	c.logf("  %-8s %-46s %4d clients: %10s  p50 %-8s p99 %-8s CPU %s errors %d%s", side, work, r.Clients,
		FormatRate(r.Rate()), FormatDuration(r.P50), FormatDuration(r.P99), cpuText(r), r.Errors, firstErr(r))
}

func firstErr(r Result) string {
	if r.FirstError == "" {
		return ""
	}
	return " (first: " + r.FirstError + ")"
}

// Verifiers is the number of Ed25519 checks of one signed command across
// the cluster: the leader's admission check before proposing, and the
// state machine of each of the 3 voters when it applies the entry.
const Verifiers = 4

// RunSuite starts both clusters, runs every row and stops the clusters
// (also when ctx is cancelled: the caller cancels it on SIGINT/SIGTERM).
func RunSuite(ctx context.Context, cfg Config) (*Report, error) {
	rep := &Report{Started: time.Now(), Verifiers: Verifiers}
	d := cfg.Duration
	cfg.logf("measuring the crypto costs of a write and of a handover (single core)")
	var err error
	if rep.Crypto, err = MeasureCrypto(min(d/4, 500*time.Millisecond)); err != nil {
		return nil, err
	}
	c := rep.Crypto
	cfg.logf("  command verify %s, seal %s, open %s, sign receipt %s, verify receipt %s",
		c.VerifyCommand, c.Seal, c.Open, c.SignReceipt, c.VerifyReceipt)
	cores := float64(runtime.NumCPU())
	rep.SigBound = cores / (float64(Verifiers) * c.VerifyCommand.Seconds())

	// etcd first: its rows need only its own cluster.
	cfg.logf("starting etcd (3 members on loopback, %s)", cfg.EtcdBin)
	etcd, err := StartEtcd(ctx, cfg.EtcdBin, mkdir(cfg.Dir, "etcd"))
	if err != nil {
		return nil, err
	}
	rep.EtcdVersion = etcd.Version
	etcdRes, err := runEtcd(ctx, &cfg, etcd)
	etcd.Stop()
	cfg.logf("etcd stopped")
	if err != nil {
		return nil, err
	}

	cfg.logf("starting Verbund as make cluster does (scripts/cluster.sh: 3 voters + 2 members, mTLS, --rate-limits off)")
	v, err := StartVerbund(ctx, cfg.Root, cfg.Bin, mkdir(cfg.Dir, "verbund"), "--rate-limits off", prefixWriter{cfg.Log, "  cluster.sh: "})
	if err != nil {
		return nil, err
	}
	vres, err := runVerbund(ctx, &cfg, v, rep)
	cfg.logf("stopping Verbund")
	v.Stop()
	if err != nil {
		return nil, err
	}
	rep.Rows = assemble(vres, etcdRes, rep)
	rep.Elapsed = time.Since(rep.Started)
	return rep, nil
}

func mkdir(parent, name string) string {
	p := filepath.Join(parent, name)
	_ = osMkdirAll(p)
	return p
}

// key names one measurement: a work and a client count.
type key struct {
	work    string
	clients int
}

// Work names of the rows (Verbund side; etcd's uses the same key).
const (
	wPublish    = "signed offering publish, to the leader"
	wFollower   = "same, sent to a follower (forwarded)"
	wBulk       = "bulk: 1,000 commands in one request (keys/s)"
	wLocal      = "FindProviders, local read"
	wLinear     = "FindProviders, linearizable"
	wProof      = "FindProviders with include_proof, local"
	wHealth     = "health check (null RPC)"
	wHandover   = "handovers end to end"
	bulkSize    = 1000
	etcdReadKey = 1000
)

func (c *Config) writeClients() []int {
	if c.Smoke {
		return []int{1, 16}
	}
	return []int{1, 16, 256}
}

func (c *Config) readClients() []int {
	if c.Smoke {
		return []int{16}
	}
	return []int{16, 256}
}

func (c *Config) bulkRequests() int {
	if c.Smoke {
		return 2
	}
	return 25
}

// runEtcd measures etcd's side of every row.
func runEtcd(ctx context.Context, cfg *Config, e *Etcd) (map[key]Result, error) {
	out := map[key]Result{}
	all, err := e.Client()
	if err != nil {
		return nil, err
	}
	defer all.Close()
	pids := e.PIDs()
	// The leader's endpoint: writes go there, as Verbund's do.
	leaderEP := e.Endpoints[0]
	for _, ep := range e.Endpoints {
		st, err := all.Status(ctx, ep)
		if err == nil && st.Leader == st.Header.MemberId {
			leaderEP = ep
		}
	}
	lc, err := e.Client(leaderEP)
	if err != nil {
		return nil, err
	}
	defer lc.Close()
	val := strings.Repeat("v", 1024)
	var seq atomic.Int64
	for _, n := range cfg.writeClients() {
		r := RunWith(ctx, n, cfg.Duration, pids, func(ctx context.Context, _ int) (int, error) {
			_, err := lc.Put(ctx, fmt.Sprintf("bench/put/%d", seq.Add(1)), val)
			return 1, err
		})
		cfg.progress("etcd", "put (leader)", r)
		out[key{wPublish, n}] = r
	}
	// Bulk: 1,000-operation transactions (--max-txn-ops 1000).
	var txns atomic.Int64
	r := RunWith(ctx, 1, 10*cfg.Duration, pids, func(ctx context.Context, _ int) (int, error) {
		t := txns.Add(1)
		if t > int64(cfg.bulkRequests()) {
			return 0, ErrExhausted
		}
		ops := make([]clientv3.Op, bulkSize)
		for i := range ops {
			ops[i] = clientv3.OpPut(fmt.Sprintf("bench/bulk/%d/%d", t, i), val)
		}
		_, err := lc.Txn(ctx).Then(ops...).Commit()
		return bulkSize, err
	})
	cfg.progress("etcd", "1,000-op transaction", r)
	out[key{wBulk, 1}] = r
	// Reads over keys that exist.
	for i := range etcdReadKey {
		if _, err := lc.Put(ctx, fmt.Sprintf("bench/read/%d", i), val); err != nil {
			return nil, fmt.Errorf("etcd: fill read keys: %w", err)
		}
	}
	get := func(opts ...clientv3.OpOption) Op {
		return func(ctx context.Context, _ int) (int, error) {
			res, err := all.Get(ctx, fmt.Sprintf("bench/read/%d", rand.IntN(etcdReadKey)), opts...)
			if err == nil && len(res.Kvs) != 1 {
				err = errors.New("etcd: read key missing")
			}
			return 1, err
		}
	}
	for _, n := range cfg.readClients() {
		r := RunWith(ctx, n, cfg.Duration, pids, get(clientv3.WithSerializable()))
		cfg.progress("etcd", "serializable get", r)
		out[key{wLocal, n}] = r
	}
	r = RunWith(ctx, 16, cfg.Duration, pids, get())
	cfg.progress("etcd", "linearizable get", r)
	out[key{wLinear, 16}] = r
	return out, ctx.Err()
}

// runVerbund measures Verbund's side of every row, the null-RPC cost and
// the handover bound (stored in rep).
func runVerbund(ctx context.Context, cfg *Config, v *Verbund, rep *Report) (map[key]Result, error) {
	out := map[key]Result{}
	pids := v.PIDs()
	voters := v.API[:3]
	plain := h2cClient("")
	li, err := leaderIndex(ctx, plain, voters)
	if err != nil {
		return nil, err
	}
	leader, follower := voters[li], voters[(li+1)%3]
	cfg.logf("Verbund leader: %s; follower used: %s", leader, follower)
	sk, err := loadKey(filepath.Join(v.Dir, "n2", "keys", "signing.jwk"))
	if err != nil {
		return nil, fmt.Errorf("Munich's signing key: %w", err)
	}
	publishRow := func(api, work, tag string, n int) error {
		count := max(200, cfg.MaxWriteRate*int(cfg.Duration/time.Second))
		if n == 1 {
			count = max(200, 1500*int(cfg.Duration/time.Second))
		}
		cmds, err := signOfferings(sk, tag, count)
		if err != nil {
			return err
		}
		clients := makeClients(api, n, registryv1connect.NewPublishServiceClient)
		var next atomic.Int64
		wait := cfg.profile(ctx, tag, map[string]string{"leader": v.Admin[li], "follower": v.Admin[(li+1)%3]})
		r := RunWith(ctx, n, cfg.Duration, pids, func(ctx context.Context, w int) (int, error) {
			i := next.Add(1) - 1
			if i >= int64(len(cmds)) {
				return 0, ErrExhausted
			}
			return 1, publishOne(ctx, clients[w], cmds[i:i+1])
		})
		wait()
		cfg.progress("Verbund", work, r)
		out[keyOf(work, n)] = r
		return nil
	}
	for _, n := range cfg.writeClients() {
		if err := publishRow(leader, wPublish, fmt.Sprintf("l%d", n), n); err != nil {
			return nil, err
		}
	}
	if err := publishRow(follower, wFollower, "f16", 16); err != nil {
		return nil, err
	}
	// Bulk.
	cmds, err := signOfferings(sk, "bulk", bulkSize*cfg.bulkRequests())
	if err != nil {
		return nil, err
	}
	pc := registryv1connect.NewPublishServiceClient(plain, leader)
	var reqs atomic.Int64
	r := RunWith(ctx, 1, 10*cfg.Duration, pids, func(ctx context.Context, _ int) (int, error) {
		i := int(reqs.Add(1) - 1)
		if i >= cfg.bulkRequests() {
			return 0, ErrExhausted
		}
		return bulkSize, publishOne(ctx, pc, cmds[i*bulkSize:(i+1)*bulkSize])
	})
	cfg.progress("Verbund", "bulk publish (1,000 commands a request)", r)
	out[key{wBulk, 1}] = r

	// Reads, spread over the three voters (as etcd's client spreads its gets).
	qc := func(api string) registryv1connect.QueryServiceClient {
		return registryv1connect.NewQueryServiceClient(plain, api)
	}
	var pairs [][2]string
	for _, p := range readPairs {
		res, err := qc(leader).FindProviders(ctx, connect.NewRequest(&registryv1.FindProvidersRequest{LeikaKey: p[0], Area: p[1]}))
		if err != nil {
			return nil, fmt.Errorf("FindProviders %v: %w", p, err)
		}
		if len(res.Msg.GetProviders()) > 0 {
			pairs = append(pairs, p)
		}
	}
	if len(pairs) == 0 {
		return nil, errors.New("no FindProviders question of the benchmark has providers in the sample data")
	}
	cfg.logf("FindProviders questions with hits: %v", pairs)
	find := func(consistency registryv1.Consistency, proof bool, n int) Op {
		cs := make([]registryv1connect.QueryServiceClient, n)
		for w := range n {
			cs[w] = registryv1connect.NewQueryServiceClient(sharedClient(w), voters[w%3])
		}
		return func(ctx context.Context, w int) (int, error) {
			p := pairs[rand.IntN(len(pairs))]
			res, err := cs[w].FindProviders(ctx, connect.NewRequest(&registryv1.FindProvidersRequest{
				LeikaKey: p[0], Area: p[1], IncludeProof: proof, Read: &registryv1.ReadOptions{Consistency: consistency}}))
			if err == nil && len(res.Msg.GetProviders()) == 0 {
				err = errors.New("FindProviders: no providers")
			}
			return 1, err
		}
	}
	for _, n := range cfg.readClients() {
		r := RunWith(ctx, n, cfg.Duration, pids, find(registryv1.Consistency_CONSISTENCY_LOCAL, false, n))
		cfg.progress("Verbund", wLocal, r)
		out[key{wLocal, n}] = r
	}
	r = RunWith(ctx, 16, cfg.Duration, pids, find(registryv1.Consistency_CONSISTENCY_LINEARIZABLE, false, 16))
	cfg.progress("Verbund", wLinear, r)
	out[key{wLinear, 16}] = r
	r = RunWith(ctx, 16, cfg.Duration, pids, find(registryv1.Consistency_CONSISTENCY_LOCAL, true, 16))
	cfg.progress("Verbund", wProof, r)
	out[key{wProof, 16}] = r

	// The null RPC, on the leader.
	hcs := make([]*connect.Client[healthv1.HealthCheckRequest, healthv1.HealthCheckResponse], 16)
	for w := range hcs {
		hcs[w] = healthClient(sharedClient(w), leader)
	}
	r = RunWith(ctx, 16, cfg.Duration, pids, func(ctx context.Context, w int) (int, error) {
		_, err := hcs[w].CallUnary(ctx, connect.NewRequest(&healthv1.HealthCheckRequest{}))
		return 1, err
	})
	cfg.progress("Verbund", wHealth, r)
	out[key{wHealth, 16}] = r
	if r.Calls > 0 && r.ProcCPUOK {
		rep.NullRPCCPU = r.ProcCPU / time.Duration(r.Calls)
	}
	cores := float64(runtime.NumCPU())
	perHandover := rep.Crypto.Handover() + 2*rep.NullRPCCPU
	if perHandover > 0 {
		rep.HandoverBnd = cores / perHandover.Seconds()
	}

	// Handovers: Munich's node (n2) to Augsburg (n3), end to end.
	hr, err := runHandovers(ctx, cfg, v)
	if err != nil {
		return nil, err
	}
	cfg.progress("Verbund", wHandover, hr)
	out[key{wHandover, 16}] = hr
	return out, ctx.Err()
}

// runHandovers sends handovers from 16 senders through Munich's node for
// the row's duration and then waits until the node's outbox holds no
// pending one: the rate is delivered handovers over the time from the
// first send to the last receipt. Latencies are SendHandover's (stored
// in the durable outbox).
func runHandovers(ctx context.Context, cfg *Config, v *Verbund) (Result, error) {
	api := v.API[1]
	tok, err := clerkToken(ctx, filepath.Join(v.Dir, "n2"), api)
	if err != nil {
		return Result{}, err
	}
	hcs := make([]federationv1connect.HandoverServiceClient, 16)
	for w := range hcs {
		hcs[w] = federationv1connect.NewHandoverServiceClient(h2cClient(tok), api)
	}
	var seq atomic.Int64
	pids := v.PIDs()
	start := time.Now()
	r := RunWith(ctx, 16, cfg.Duration, pids, func(ctx context.Context, w int) (int, error) {
		i := seq.Add(1)
		_, err := hcs[w].SendHandover(ctx, connect.NewRequest(&federationv1.SendHandoverRequest{
			RecipientOrganisationId: augsburg, CaseJson: caseJSON(int(i)), Reason: "Umzug nach Augsburg", LeikaKey: leikaCase,
		}))
		return 1, err
	})
	// Wait for delivery of everything sent.
	deadline := time.Now().Add(2*time.Minute + 10*cfg.Duration)
	for {
		n, err := pendingHandovers(ctx, hcs[0])
		if err != nil {
			return r, fmt.Errorf("ListOutbox: %w", err)
		}
		if n == 0 {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			r.Errors += int64(n)
			r.FirstError = fmt.Sprintf("%d handovers still pending after %s", n, time.Since(start).Round(time.Second))
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	r.Elapsed = time.Since(start)
	return r, nil
}

// keyOf is the table key of a measurement.
func keyOf(work string, n int) key { return key{work, n} }

// assemble makes the table rows from both sides' results.
func assemble(v, e map[key]Result, rep *Report) []Row {
	get := func(m map[key]Result, k key) *Result {
		if r, ok := m[k]; ok {
			return &r
		}
		return nil
	}
	var rows []Row
	for _, k := range []key{{wPublish, 1}, {wPublish, 16}, {wPublish, 256}, {wFollower, 16}, {wBulk, 1},
		{wLocal, 16}, {wLocal, 256}, {wLinear, 16}, {wProof, 16}, {wHealth, 16}, {wHandover, 16}} {
		vr := get(v, k)
		if vr == nil {
			continue
		}
		row := Row{Work: k.work, Clients: k.clients, Verbund: vr}
		switch k.work {
		case wPublish:
			row.Etcd, row.EtcdWork = get(e, k), "put"
			row.SigBound = rep.SigBound
		case wFollower:
			// Against etcd's put to its leader at 16 clients, as the
			// issue's table compares it.
			row.Etcd, row.EtcdWork = get(e, key{wPublish, 16}), "put to the leader"
			row.SigBound = rep.SigBound
		case wBulk:
			row.Etcd, row.EtcdWork = get(e, k), "1,000-op txn"
			row.SigBound = rep.SigBound
		case wLocal:
			row.Etcd, row.EtcdWork = get(e, k), "serializable get"
		case wLinear:
			row.Etcd, row.EtcdWork = get(e, k), "linearizable get"
		case wHandover:
			row.Bound, row.BoundWhat = rep.HandoverBnd, "crypto+RPC bound"
		}
		rows = append(rows, row)
	}
	return rows
}
