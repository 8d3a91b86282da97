package cli

import (
	"context"
	"fmt"
	"os"
	"time"

	"connectrpc.com/connect"

	"github.com/verbund/verbund/keys"
	nodev1 "github.com/verbund/verbund/proto/gen/verbund/node/v1"
	"github.com/verbund/verbund/sampledata/synth"
)

// synthCommand is "verbund synth": the national-scale synthesised registry
// (sampledata/synth) loaded into a fresh network through Publish.
func synthCommand() Command {
	return Command{
		Name:    "synth",
		Summary: "load a synthesised national-scale registry (11,004 municipalities, millions of offerings) for load tests",
		Run:     runSynth,
	}
}

func runSynth(ctx context.Context, env *Env, args []string) error {
	fs := newFlagSet("synth --key KEY [--offerings N] [--seed S] [--per-command M] [--per-request C]",
		"Synthesise a national-scale registry from the real municipality register and Munich's\n"+
			"catalogue and load it through the signed write path: the operator (--key) registers\n"+
			"the 16 state agencies and the catalogue, each agency its municipalities and shared\n"+
			"service centres (keys derived from --seed), each municipality signs its own offerings\n"+
			"(--offerings in total, spread evenly) and its authorisations of the centre nearest to\n"+
			"it, each centre its offerings for those neighbours. Everything synthesised is named\n"+
			"\"synthetisch\". For a fresh network (not one with `verbund import`'s sample data: the\n"+
			"state agencies there have other keys). Prints progress in offerings/s. Re-runs with\n"+
			"the same flags are answered as duplicates within the replay window.")
	o := clientFlags(fs, false)
	var keyFile, org string
	var offerings, perCommand, perRequest, parallel int
	var seed uint64
	var quiet bool
	fs.StringVar(&keyFile, "key", os.Getenv("VERBUND_KEY"), "the operator's private signing JWK `file` (env VERBUND_KEY)")
	fs.StringVar(&org, "org", "", "the operator's organisation `id` (default: the node's organisation)")
	fs.IntVar(&offerings, "offerings", synth.DefaultOfferings, "municipal offerings in total")
	fs.Uint64Var(&seed, "seed", 1, "seed of keys, choices and command ids")
	fs.IntVar(&perCommand, "per-command", 100, "offerings (mutations) per signed command")
	fs.IntVar(&perRequest, "per-request", 1000, "commands per Publish request (also cut at 1 MiB)")
	fs.IntVar(&parallel, "parallel", 2, "requests in flight")
	fs.BoolVar(&quiet, "quiet", false, "no progress lines")
	fs.check(func() error {
		if offerings < 1 || perCommand < 1 || perCommand > 1000 || perRequest < 1 || perRequest > 1000 || parallel < 1 {
			return fmt.Errorf("--offerings ≥ 1, --per-command 1..1000, --per-request 1..1000, --parallel ≥ 1")
		}
		return nil
	})
	if _, err := fs.parse(env, args, 0, 0, ""); err != nil {
		return err
	}
	if keyFile == "" {
		return fs.usageErr("--key is required")
	}
	opKey, err := keys.Load(keyFile)
	if err != nil {
		return err
	}
	if org == "" {
		st, err := o.node().GetStatus(ctx, connect.NewRequest(&nodev1.GetStatusRequest{}))
		if err != nil {
			return o.rpcErr(err)
		}
		org = st.Msg.GetOrganisationId()
	}
	start := time.Now()
	var last time.Time
	var lastOff int
	prog, err := synth.Load(ctx, ConnectPublisher{Client: o.publisher(), Timeout: max(o.timeout, 5*time.Minute)},
		synth.Config{Seed: seed, Offerings: offerings, OperatorID: org, OperatorKey: opKey, MutationsPerCommand: perCommand},
		synth.LoadOptions{CommandsPerRequest: perRequest, Parallel: parallel, OnProgress: func(p synth.Progress) {
			if quiet || time.Since(last) < 2*time.Second {
				return
			}
			rate := float64(p.Offerings-lastOff) / time.Since(last).Seconds()
			if last.IsZero() {
				rate = float64(p.Offerings) / p.Elapsed.Seconds()
			}
			fmt.Fprintf(env.Stderr, "%7.1fs  %-16s %9d offerings  %7d commands  %8.0f offerings/s  index %d\n",
				p.Elapsed.Seconds(), p.Phase, p.Offerings, p.Commands, rate, p.Index)
			last, lastOff = time.Now(), p.Offerings
		}})
	if err != nil {
		return err
	}
	took := time.Since(start)
	if o.json() {
		fmt.Fprintf(env.Stdout, "{\"offerings\": %d, \"records\": %d, \"commands\": %d, \"duplicates\": %d, \"lastIndex\": %d, \"elapsedMs\": %d}\n",
			prog.Offerings, prog.Records, prog.Commands, prog.Duplicates, prog.Index, took.Milliseconds())
		return nil
	}
	fmt.Fprintf(env.Stdout, "%d offerings (%d records, %d commands, %d already there) in %v: %.0f offerings/s, up to Raft index %d\n",
		prog.Offerings, prog.Records, prog.Commands, prog.Duplicates, took.Round(time.Millisecond), float64(prog.Offerings)/took.Seconds(), prog.Index)
	return nil
}
