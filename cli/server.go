package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/verbund/verbund/node"
)

func init() {
	Register(Command{
		Name:    "node",
		Usage:   "node [--config FILE] [--org ID] [--data-dir DIR] [--http-addr ADDR] [--raft-addr ADDR] [--bootstrap] [--genesis]",
		Summary: "run a node",
		Run:     runNode,
	})
	Register(Command{
		Name:    "dev",
		Usage:   "dev [--data-dir DIR] [--http-addr ADDR] [--raft-addr ADDR] [--no-sample-data]",
		Summary: "run a single-node network with the sample data (what `make run` starts)",
		Run:     runDev,
	})
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
}

func (f nodeFlags) config(stderr interface{ Write([]byte) (int, error) }) (node.Config, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(f.LogLevel)); err != nil {
		return node.Config{}, fmt.Errorf("--log-level: %w", err)
	}
	cfg := node.DefaultConfig()
	cfg.OrgID, cfg.OrgName, cfg.NodeID = f.Org, f.OrgName, f.NodeID
	cfg.DataDir, cfg.HTTPAddr, cfg.RaftAddr = f.DataDir, f.HTTPAddr, f.RaftAddr
	cfg.Bootstrap, cfg.Genesis, cfg.SampleData = f.Bootstrap, f.Genesis, f.SampleData
	cfg.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl}))
	return cfg, nil
}

func defaultNodeFlags() nodeFlags {
	d := node.DefaultConfig()
	return nodeFlags{DataDir: d.DataDir, HTTPAddr: d.HTTPAddr, RaftAddr: d.RaftAddr, LogLevel: "info"}
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
			b, err := os.ReadFile(path)
			if err != nil {
				return fmt.Errorf("config file: %w", err)
			}
			dec := yaml.NewDecoder(strings.NewReader(string(b)))
			dec.KnownFields(true)
			if err := dec.Decode(&d); err != nil {
				return fmt.Errorf("config file %s: %w", path, err)
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
	return serve(ctx, env, cfg)
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
	return serve(ctx, env, cfg)
}

// serve runs a node until ctx is cancelled (SIGINT/SIGTERM).
func serve(ctx context.Context, env *Env, cfg node.Config) error {
	n, err := node.New(cfg)
	if err != nil {
		return err
	}
	if err := n.Start(ctx); err != nil {
		_ = n.Close()
		return err
	}
	c := n.Config()
	fmt.Fprintf(env.Stdout, "Verbund node %s (organisation %s) is running.\n", c.NodeID, c.OrgID)
	fmt.Fprintf(env.Stdout, "  API (Connect, gRPC, gRPC-Web): %s\n", n.APIURL())
	fmt.Fprintf(env.Stdout, "  Web page:                      %s/\n", n.APIURL())
	fmt.Fprintf(env.Stdout, "  Raft:                          %s\n", n.RaftAddr())
	fmt.Fprintf(env.Stdout, "  Data dir:                      %s\n", c.DataDir)
	fmt.Fprintf(env.Stdout, "Try: bin/verbund providers --addr %s --service 99050012104000 --area 091620000000\n", n.APIURL())
	fmt.Fprintf(env.Stdout, "     bin/verbund services search umzug --addr %s\n", n.APIURL())
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
