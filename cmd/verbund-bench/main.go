// Command verbund-bench runs the side-by-side benchmark of Verbund against
// etcd (package bench): `make bench` for the full run that writes
// bench/results/, `make bench-smoke` for a one-second-per-row check.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/verbund/verbund/bench"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "verbund-bench:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		smoke    = flag.Bool("smoke", false, "every row for about -duration (default 1s), fewer client counts, small gossip run; fail on any error or missing number")
		duration = flag.Duration("duration", 0, "time per row and side (default 10s, 1s with -smoke)")
		out      = flag.String("out", "bench/results", "directory for results.md and the SVG plots (-smoke: a temporary directory unless set)")
		bin      = flag.String("bin", "bin/verbund", "the verbund binary built from this checkout")
		etcdBin  = flag.String("etcd", "/usr/bin/etcd", "etcd server binary (Debian's etcd-server)")
		gossip   = flag.String("gossip", "25,50,100", "gossip sizes to measure (comma-separated; empty: none)")
		window   = flag.Duration("gossip-window", 10*time.Second, "quiet window for gossip bytes")
		maxRate  = flag.Int("max-write-rate", 6000, "commands pre-signed per second of a write row")
		keep     = flag.Bool("keep", false, "keep the clusters' data directory")
		suite    = flag.Bool("suite", true, "run the Verbund vs etcd rows (false: gossip only, nothing written)")
		national = flag.Int("national", 0, "also load this many synthesised offerings into 3 fresh voters and measure memory, disk, snapshots, queries and a new member's catch-up (make bench-national; writes national.md)")
		profiles = flag.String("profiles", "", "directory for CPU profiles of the Verbund leader and follower during each write row (go tool pprof FILE)")
	)
	flag.Parse()
	outSet := false
	flag.Visit(func(f *flag.Flag) {
		if f.Name == "out" {
			outSet = true
		}
	})
	if *duration == 0 {
		*duration = 10 * time.Second
		if *smoke {
			*duration = time.Second
		}
	}
	root, err := os.Getwd()
	if err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(root, "scripts", "cluster.sh")); err != nil {
		return fmt.Errorf("run from the checkout's root (scripts/cluster.sh): %w", err)
	}
	absBin, _ := filepath.Abs(*bin)
	if _, err := os.Stat(absBin); err != nil {
		return fmt.Errorf("%s: build it first (make build): %w", *bin, err)
	}
	if _, err := os.Stat(*etcdBin); err != nil {
		return fmt.Errorf("%s: install Debian's etcd-server (make bench does): %w", *etcdBin, err)
	}
	dir, err := os.MkdirTemp("", "verbund-bench-")
	if err != nil {
		return err
	}
	if !*keep {
		defer os.RemoveAll(dir)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	load := bench.LoadAvg()
	cfg := bench.Config{Root: root, Bin: absBin, EtcdBin: *etcdBin, Dir: dir, Duration: *duration, Smoke: *smoke,
		MaxWriteRate: *maxRate, Log: os.Stdout, ProfileDir: *profiles}
	fmt.Printf("verbund-bench: %s per row and side, load average %s, scratch dir %s\n", *duration, load, dir)
	rep := &bench.Report{Started: time.Now()}
	if *suite {
		if rep, err = bench.RunSuite(ctx, cfg); err != nil {
			return err
		}
	}
	sizes := parseSizes(*gossip)
	if *smoke && !flagSet("gossip") {
		sizes = []int{10}
	}
	if *smoke && !flagSet("gossip-window") {
		*window = time.Second
	}
	for _, n := range sizes {
		fmt.Printf("[%s] gossip: %d members...\n", time.Now().Format("15:04:05"), n)
		g, err := bench.MeasureGossip(ctx, n, *window)
		if err != nil {
			if *smoke || ctx.Err() != nil {
				return fmt.Errorf("gossip with %d members: %w", n, err)
			}
			// The sizes grow: a size this machine cannot host ends the series.
			note := fmt.Sprintf("Gossip with %s members failed on this machine (%v); larger sizes were not tried.", bench.Thousands(int64(n)), err)
			fmt.Println("  " + note)
			rep.Notes = append(rep.Notes, note)
			break
		}
		fmt.Printf("  join reaches all %d in %s; %.0f bytes/s sent per member (model %.0f)\n", n, g.Converge, g.BytesPerNode, g.ModelBytes)
		rep.Gossip = append(rep.Gossip, g)
	}
	if len(rep.Gossip) > 0 {
		for _, n := range []int{1000, 11000} {
			rep.GossipModel = append(rep.GossipModel, bench.Project(rep.Gossip, n))
		}
	}
	if *national > 0 {
		res, err := bench.RunNational(ctx, bench.NationalConfig{Root: root, Bin: absBin, Dir: dir, Offerings: *national,
			QueryDuration: *duration, Log: os.Stdout, ProfileDir: *profiles})
		if err != nil {
			return fmt.Errorf("national load: %w", err)
		}
		if *smoke && (!res.Query.OK() || res.QueryHits < 0.99) {
			return fmt.Errorf("national load: FindProviders after the load: %d answers, %d errors (%s), %.0f %% with a provider",
				res.Query.Calls, res.Query.Errors, res.Query.FirstError, 100*res.QueryHits)
		}
		m := bench.DescribeMachine(root, "", fmt.Sprintf("make bench-national NATIONAL_OFFERINGS=%d", *national))
		m.LoadAvg = load
		nout := *out
		if *smoke && !outSet {
			nout = filepath.Join(dir, "results")
		}
		if err := os.MkdirAll(nout, 0o755); err != nil {
			return err
		}
		f, err := os.Create(filepath.Join(nout, "national.md"))
		if err != nil {
			return err
		}
		if err := bench.WriteNationalMarkdown(f, res, m, m.Command); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
		fmt.Printf("national results in %s\n", filepath.Join(nout, "national.md"))
	}
	rep.Elapsed = time.Since(rep.Started)
	if !*suite {
		return nil
	}
	m := bench.DescribeMachine(root, rep.EtcdVersion, "make bench")
	m.LoadAvg = load
	if *smoke {
		m.Command = "make bench-smoke"
		if !outSet {
			*out = filepath.Join(dir, "results")
		}
	}
	if err := writeResults(*out, rep, m); err != nil {
		return err
	}
	fmt.Printf("results in %s (%s)\n", *out, rep.Elapsed.Round(time.Second))
	if *smoke {
		return checkSmoke(rep)
	}
	return nil
}

func flagSet(name string) bool {
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

func parseSizes(s string) []int {
	var out []int
	for _, f := range strings.Split(s, ",") {
		var n int
		if _, err := fmt.Sscan(strings.TrimSpace(f), &n); err == nil && n > 1 {
			out = append(out, n)
		}
	}
	return out
}

func writeResults(dir string, rep *bench.Report, m bench.Machine) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var md strings.Builder
	if err := bench.WriteMarkdown(&md, rep, m); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "results.md"), []byte(md.String()), 0o644); err != nil {
		return err
	}
	fmt.Print("\n" + md.String())
	tp, lat := bench.Plots(rep)
	for name, p := range map[string]bench.Plot{"throughput.svg": tp, "latency.svg": lat} {
		var b strings.Builder
		if err := p.WriteSVG(&b); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(b.String()), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// checkSmoke fails unless every row produced a number on each side it has
// and no side saw an error.
func checkSmoke(rep *bench.Report) error {
	var bad []string
	for _, r := range rep.Rows {
		for side, res := range map[string]*bench.Result{"Verbund": r.Verbund, "etcd": r.Etcd} {
			if res == nil {
				continue
			}
			if !res.OK() {
				bad = append(bad, fmt.Sprintf("%s %q (%d clients): %d ops, %d errors %s", side, r.Work, r.Clients, res.Ops, res.Errors, res.FirstError))
			}
		}
	}
	if len(rep.Rows) == 0 {
		bad = append(bad, "no rows")
	}
	for _, g := range rep.Gossip {
		if g.Converge <= 0 || g.BytesPerNode <= 0 {
			bad = append(bad, fmt.Sprintf("gossip with %d members measured nothing", g.Members))
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("smoke run failed:\n  %s", strings.Join(bad, "\n  "))
	}
	fmt.Printf("smoke: %d rows, every one measured without errors\n", len(rep.Rows))
	return nil
}
