package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"connectrpc.com/connect"

	nodev1 "github.com/verbund/verbund/proto/gen/verbund/node/v1"
	"github.com/verbund/verbund/proto/gen/verbund/node/v1/nodev1connect"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
	"github.com/verbund/verbund/proto/gen/verbund/registry/v1/registryv1connect"
)

// NationalConfig configures RunNational.
type NationalConfig struct {
	Root, Bin string // the checkout and bin/verbund
	Dir       string // scratch dir for the cluster's data
	// Offerings is the number of municipal offerings verbund synth loads.
	Offerings int
	// QueryDuration is how long FindProviders is measured after the load.
	QueryDuration time.Duration
	Log           io.Writer
	// ProfileDir, if set, receives heap profiles of the leader after the
	// load (national-leader.heap) and of the new member once complete.
	ProfileDir string
}

// NodeUse is one node's resources after the national load.
type NodeUse struct {
	Node      string
	PeakRSS   int64 // VmHWM: the process's peak resident memory
	PeakAnon  int64 // the peak of RssAnon sampled every 250 ms: memory not backed by files (Go heap, caches)
	Disk      int64 // the data dir
	RaftLog   int64 // raft/ without snapshots
	Snapshots int64 // raft/snapshots
	State     int64 // the registry's badger (state/)
}

// NationalResult is what RunNational measured.
type NationalResult struct {
	Offerings   int
	Load        time.Duration // verbund synth, start to last answer
	AppliedAt   uint64        // the leader's applied index after the load
	Voters      []NodeUse     // n1..n3 after the load
	Snapshots   int           // Raft snapshots the leader wrote during the load
	SnapBytes   int64         // the leader's last snapshot: size
	SnapSeconds float64       // and time
	Query       Result        // FindProviders, local reads at the followers
	QueryHits   float64       // share of the questions answered with a provider
	// Member: a new member (n4) started after the load, until its state
	// reached the leader's applied index.
	MemberCatchUp time.Duration
	Member        NodeUse
}

// RunNational starts three voters as make cluster does (mTLS, default
// durability, rate limits off) without the sample data, loads the national
// synthesised data set (verbund synth) through the leader, records each
// voter's peak memory and disk, the leader's snapshots, FindProviders at
// that size, and how long a new member takes to hold the whole state.
func RunNational(ctx context.Context, cfg NationalConfig) (*NationalResult, error) {
	if cfg.QueryDuration <= 0 {
		cfg.QueryDuration = 10 * time.Second
	}
	logf := func(format string, args ...any) {
		fmt.Fprintf(cfg.Log, "[%s] %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
	}
	dir := filepath.Join(cfg.Dir, "national")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if need, free := nationalDiskNeed(cfg.Offerings), freeBytes(dir); free >= 0 && free < need {
		return nil, fmt.Errorf("%s offerings need about %s free under %s (three voters and a new member; measured: 16–18 GiB per voter at 5 M), %s are free: set TMPDIR to a larger file system or lower NATIONAL_OFFERINGS",
			Thousands(int64(cfg.Offerings)), bytesIEC(need), cfg.Dir, bytesIEC(free))
	}
	logf("starting 3 voters as make cluster does, without the sample data (scripts/cluster.sh, SAMPLE_DATA=0)")
	v, err := StartVerbund(ctx, cfg.Root, cfg.Bin, dir, "--rate-limits off", prefixWriter{cfg.Log, "  cluster.sh: "},
		"SAMPLE_DATA=0", "NODES_ONLY=n1 n2 n3")
	if err != nil {
		return nil, err
	}
	defer v.Stop()
	hc := h2cClient("")
	voters := v.API[:3]
	if err := waitVoters(ctx, hc, voters[0], 3); err != nil {
		return nil, err
	}
	li, err := leaderIndex(ctx, hc, voters)
	if err != nil {
		return nil, err
	}
	res := &NationalResult{Offerings: cfg.Offerings}

	sampler := newRSSSampler(v.PIDs())
	logf("loading %s offerings with verbund synth through the leader (n%d)", Thousands(int64(cfg.Offerings)), li+1)
	synth := exec.CommandContext(ctx, cfg.Bin, "synth", "--addr", voters[li],
		"--key", filepath.Join(dir, "n1", "keys", "signing.jwk"), "--offerings", strconv.Itoa(cfg.Offerings))
	synth.Stdout, synth.Stderr = prefixWriter{cfg.Log, "  synth: "}, prefixWriter{cfg.Log, "  synth: "}
	start := time.Now()
	if err := synth.Run(); err != nil {
		return nil, fmt.Errorf("verbund synth: %w", err)
	}
	res.Load = time.Since(start)
	st, err := status(ctx, hc, voters[li])
	if err != nil {
		return nil, err
	}
	res.AppliedAt = st.GetAppliedIndex()
	logf("loaded in %s (%s offerings); leader applied index %d", res.Load.Round(time.Second),
		FormatRate(float64(cfg.Offerings)/res.Load.Seconds()), res.AppliedAt)
	// Every voter holds the state before it is measured.
	for _, api := range voters {
		if err := waitApplied(ctx, hc, api, res.AppliedAt, 5*time.Minute); err != nil {
			return nil, err
		}
	}
	pids := v.PIDs()
	anon := sampler.stop()
	for i := range 3 {
		u, err := nodeUse(filepath.Join(dir, fmt.Sprintf("n%d", i+1)), fmt.Sprintf("n%d", i+1), pids, i)
		if err != nil {
			return nil, err
		}
		u.PeakAnon = anon[i]
		res.Voters = append(res.Voters, u)
		logf("  %s: peak RSS %s (not file-backed: %s), disk %s (Raft log %s, snapshots %s, state %s)", u.Node, bytesIEC(u.PeakRSS), bytesIEC(u.PeakAnon), bytesIEC(u.Disk),
			bytesIEC(u.RaftLog), bytesIEC(u.Snapshots), bytesIEC(u.State))
	}
	if cfg.ProfileDir != "" {
		if err := fetchProfile(ctx, v.Admin[li]+"/debug/pprof/heap", filepath.Join(cfg.ProfileDir, "national-leader.heap")); err != nil {
			logf("  leader's heap profile: %v", err)
		}
	}
	if m, err := scrapeMetrics(ctx, v.Admin[li]); err == nil {
		res.Snapshots = int(m["verbund_raft_snapshots_written_total"])
		res.SnapBytes = int64(m["verbund_raft_snapshot_last_bytes"])
		res.SnapSeconds = m["verbund_raft_snapshot_last_seconds"]
		logf("  leader's snapshots during the load: %d; last %s in %.1f s", res.Snapshots, bytesIEC(res.SnapBytes), res.SnapSeconds)
	} else {
		logf("  leader's metrics: %v", err)
	}

	// FindProviders at this size: a random municipality and one of the
	// services the first municipality offers (the generator gives every
	// municipality the same services), local reads at the two followers.
	ms, services, err := nationalQuestions(ctx, hc, voters[li])
	if err != nil {
		return nil, err
	}
	followers := []string{voters[(li+1)%3], voters[(li+2)%3]}
	const clients = 16
	cs := make([]registryv1connect.QueryServiceClient, clients)
	for w := range cs {
		cs[w] = registryv1connect.NewQueryServiceClient(sharedClient(w), followers[w%2])
	}
	var hits, asked atomic.Int64
	res.Query = RunWith(ctx, clients, cfg.QueryDuration, pids, func(ctx context.Context, w int) (int, error) {
		m := ms[rand.IntN(len(ms))]
		s := services[rand.IntN(len(services))]
		r, err := cs[w].FindProviders(ctx, connect.NewRequest(&registryv1.FindProvidersRequest{LeikaKey: s, Area: m}))
		if err == nil {
			asked.Add(1)
			if len(r.Msg.GetProviders()) > 0 {
				hits.Add(1)
			}
		}
		return 1, err
	})
	if n := asked.Load(); n > 0 {
		res.QueryHits = float64(hits.Load()) / float64(n)
	}
	logf("  FindProviders, local, %d clients: %s, p50 %s, p99 %s, %.0f %% with a provider", clients, FormatRate(res.Query.Rate()),
		FormatDuration(res.Query.P50), FormatDuration(res.Query.P99), 100*res.QueryHits)

	// A new member joins and catches up.
	logf("starting a new member (n4) and waiting until it holds the state up to index %d", res.AppliedAt)
	start = time.Now()
	msampler := newRSSSampler(nil)
	w, err := v.AddNodes(ctx, "n4", prefixWriter{cfg.Log, "  cluster.sh: "}, "SAMPLE_DATA=0")
	if err != nil {
		return nil, err
	}
	defer w.Stop()
	if pids := v.PIDs(); len(pids) >= 4 {
		msampler.add(pids[3])
	}
	if err := waitApplied(ctx, hc, v.API[3], res.AppliedAt, 10*time.Minute); err != nil {
		return nil, fmt.Errorf("new member: %w", err)
	}
	res.MemberCatchUp = time.Since(start)
	if res.Member, err = nodeUse(filepath.Join(dir, "n4"), "n4", v.PIDs(), 3); err != nil {
		return nil, err
	}
	if a := msampler.stop(); len(a) > 0 {
		res.Member.PeakAnon = a[0]
	}
	if cfg.ProfileDir != "" {
		if err := fetchProfile(ctx, v.Admin[3]+"/debug/pprof/heap", filepath.Join(cfg.ProfileDir, "national-member.heap")); err != nil {
			logf("  member's heap profile: %v", err)
		}
	}
	logf("  new member complete in %s (from its start); peak RSS %s (not file-backed: %s), disk %s", res.MemberCatchUp.Round(100*time.Millisecond),
		bytesIEC(res.Member.PeakRSS), bytesIEC(res.Member.PeakAnon), bytesIEC(res.Member.Disk))
	return res, nil
}

// waitVoters waits until the Raft configuration seen at api has n voters.
func waitVoters(ctx context.Context, hc *http.Client, api string, n int) error {
	deadline := time.Now().Add(2 * time.Minute)
	for {
		r, err := nodev1connect.NewClusterServiceClient(hc, api).ListMembers(ctx, connect.NewRequest(&nodev1.ListMembersRequest{}))
		if err == nil {
			voters := 0
			for _, m := range r.Msg.GetMembers() {
				if m.GetRaftSuffrage() == "Voter" {
					voters++
				}
			}
			if voters >= n {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("fewer than %d voters after 2 minutes (%v)", n, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// waitApplied waits until the node at api has applied index idx.
func waitApplied(ctx context.Context, hc *http.Client, api string, idx uint64, bound time.Duration) error {
	deadline := time.Now().Add(bound)
	var last uint64
	for {
		if st, err := status(ctx, hc, api); err == nil {
			last = st.GetAppliedIndex()
			if last >= idx {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s applied %d, not %d, after %s", api, last, idx, bound)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// nodeUse measures node i's peak memory (from its PID) and data dir.
func nodeUse(dataDir, name string, pids []int, i int) (NodeUse, error) {
	u := NodeUse{Node: name}
	if i < len(pids) {
		u.PeakRSS = procStatusBytes(pids[i], "VmHWM:") // the kernel's peak RSS
	}
	var err error
	if u.Disk, err = dirSize(dataDir); err != nil {
		return u, err
	}
	raftAll, _ := dirSize(filepath.Join(dataDir, "raft"))
	u.Snapshots, _ = dirSize(filepath.Join(dataDir, "raft", "snapshots"))
	u.RaftLog = raftAll - u.Snapshots
	u.State, _ = dirSize(filepath.Join(dataDir, "state"))
	return u, nil
}

// procStatusBytes reads a "… kB" field of /proc/pid/status in bytes (0 if
// unknown).
func procStatusBytes(pid int, field string) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), field); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// dirSize sums the sizes of the regular files under dir (allocated
// blocks, so sparse files count what they use).
func dirSize(dir string) (int64, error) {
	var total int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if d.Type().IsRegular() {
			if info, err := d.Info(); err == nil {
				total += allocated(info)
			}
		}
		return nil
	})
	return total, err
}

// scrapeMetrics reads the unlabelled samples of a node's /metrics.
func scrapeMetrics(ctx context.Context, admin string) (map[string]float64, error) {
	b, err := adminGet(ctx, admin+"/metrics")
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for line := range strings.Lines(string(b)) {
		name, val, ok := strings.Cut(strings.TrimSpace(line), " ")
		if !ok || strings.HasPrefix(name, "#") || strings.Contains(name, "{") {
			continue
		}
		if f, err := strconv.ParseFloat(val, 64); err == nil {
			out[name] = f
		}
	}
	return out, nil
}

// bytesIEC formats n as KiB, MiB or GiB.
func bytesIEC(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.0f MiB", float64(n)/(1<<20))
	default:
		return fmt.Sprintf("%.0f KiB", float64(n)/(1<<10))
	}
}

// allocated is the space a file takes on disk (its blocks), else its size.
func allocated(info fs.FileInfo) int64 {
	if st, ok := info.Sys().(*syscall.Stat_t); ok {
		return st.Blocks * 512
	}
	return info.Size()
}

// WriteNationalMarkdown writes res as national.md's table.
func WriteNationalMarkdown(w io.Writer, res *NationalResult, m Machine, command string) error {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	p("# Verbund at national scale: 3 voters\n\n")
	p("Run %s, command `%s`.\n\n", time.Now().UTC().Format("2006-01-02 15:04 UTC"), command)
	p("Machine: %s, %d cores; %s; Verbund at %s. Three voters started as `make cluster` starts them (scripts/cluster.sh: mTLS between nodes, default durability, rate limits off), without the sample data; `verbund synth` loads the synthesised national data set (all 11,004 municipalities, their state agencies, shared service centres and authorisations, %s municipal offerings; 100 offerings per signed command, up to 1,000 commands per request, 2 requests in flight) through the leader. Load average before: %s.\n\n",
		m.CPU, m.Cores, m.Go, m.Revision, Thousands(int64(res.Offerings)), m.LoadAvg)
	p("| measure | value |\n|---|---|\n")
	p("| load of %s offerings, start to last answer | %s (%s offerings) |\n", Thousands(int64(res.Offerings)), res.Load.Round(time.Second), FormatRate(float64(res.Offerings)/res.Load.Seconds()))
	p("| leader's applied index after the load | %d |\n", res.AppliedAt)
	for _, u := range res.Voters {
		p("| voter %s: peak RSS (not file-backed); disk (Raft log + snapshots + state) | %s (%s); %s (%s + %s + %s) |\n", u.Node, bytesIEC(u.PeakRSS), bytesIEC(u.PeakAnon), bytesIEC(u.Disk), bytesIEC(u.RaftLog), bytesIEC(u.Snapshots), bytesIEC(u.State))
	}
	p("| Raft snapshots the leader wrote during the load; the last one | %d; %s in %.1f s |\n", res.Snapshots, bytesIEC(res.SnapBytes), res.SnapSeconds)
	p("| FindProviders, local reads at the followers, 16 clients | %s, p50 %s, p99 %s (%.0f %% answered with a provider) |\n",
		FormatRate(res.Query.Rate()), FormatDuration(res.Query.P50), FormatDuration(res.Query.P99), 100*res.QueryHits)
	p("| a new member (n4) started after the load: holds the whole state | %s after its start; peak RSS %s (not file-backed %s), disk %s |\n",
		res.MemberCatchUp.Round(100*time.Millisecond), bytesIEC(res.Member.PeakRSS), bytesIEC(res.Member.PeakAnon), bytesIEC(res.Member.Disk))
	p("\nPeak RSS is the kernel's high-water mark (VmHWM) of each node process, which counts the pages of badger's memory-mapped tables and value logs it touched (file-backed, given back under memory pressure); \"not file-backed\" is the peak of RssAnon sampled every 250 ms (the Go heap, badger's caches and memtables). Disk is the blocks its data dir uses. The member's time runs from starting its process (TLS, gossip join, snapshot of the state from a server, then the change feed) until its applied index reaches the leader's.\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// rssSampler records the peak RssAnon of processes every 250 ms.
type rssSampler struct {
	mu   sync.Mutex
	pids []int
	peak []int64
	done chan struct{}
	wg   sync.WaitGroup
}

func newRSSSampler(pids []int) *rssSampler {
	s := &rssSampler{pids: slices.Clone(pids), peak: make([]int64, len(pids)), done: make(chan struct{})}
	s.wg.Go(func() {
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			s.sample()
			select {
			case <-s.done:
				return
			case <-t.C:
			}
		}
	})
	return s
}

func (s *rssSampler) add(pid int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pids = append(s.pids, pid)
	s.peak = append(s.peak, 0)
}

func (s *rssSampler) sample() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, pid := range s.pids {
		s.peak[i] = max(s.peak[i], procStatusBytes(pid, "RssAnon:"))
	}
}

// stop ends the sampling and returns the peaks, in the order of the pids.
func (s *rssSampler) stop() []int64 {
	close(s.done)
	s.wg.Wait()
	s.sample()
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.peak)
}

// nationalQuestions lists the municipalities in the registry at api and
// the services (LeiKa keys, at most 20) of the first one's offerings.
func nationalQuestions(ctx context.Context, hc *http.Client, api string) (municipalities, services []string, err error) {
	q := registryv1connect.NewQueryServiceClient(hc, api)
	token := ""
	for {
		r, err := q.ListOrganisations(ctx, connect.NewRequest(&registryv1.ListOrganisationsRequest{
			Kind: registryv1.OrganisationKind_ORGANISATION_KIND_MUNICIPALITY, PageSize: 1000, PageToken: token}))
		if err != nil {
			return nil, nil, fmt.Errorf("list municipalities: %w", err)
		}
		for _, o := range r.Msg.GetOrganisations() {
			municipalities = append(municipalities, o.GetId())
		}
		if token = r.Msg.GetNextPageToken(); token == "" {
			break
		}
	}
	if len(municipalities) == 0 {
		return nil, nil, errors.New("no municipality in the registry after the load")
	}
	r, err := q.ListOfferings(ctx, connect.NewRequest(&registryv1.ListOfferingsRequest{OrganisationId: municipalities[0], PageSize: 20}))
	if err != nil {
		return nil, nil, fmt.Errorf("offerings of %s: %w", municipalities[0], err)
	}
	seen := map[string]bool{}
	for _, o := range r.Msg.GetOfferings() {
		if k := o.GetLeikaKey(); !seen[k] {
			seen[k] = true
			services = append(services, k)
		}
	}
	if len(services) == 0 {
		return nil, nil, fmt.Errorf("%s offers nothing after the load", municipalities[0])
	}
	return municipalities, services, nil
}

// nationalDiskNeed estimates the disk a national run of n offerings takes:
// about 3.6 GiB per million offerings on each of the three voters (state,
// snapshots and log as measured at 5 M: 16–18 GiB each), the new member's
// copy of the state, and 1 GiB to spare.
func nationalDiskNeed(n int) int64 {
	const gib = 1 << 30
	perMillion := (3*3.6 + 2) * gib
	return int64(perMillion*float64(n)/1e6) + gib
}

// freeBytes is the space available to this user on dir's file system (-1
// if unknown).
func freeBytes(dir string) int64 {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return -1
	}
	return int64(st.Bavail) * int64(st.Bsize)
}
