package cli

import (
	"context"
	"fmt"
	"time"

	"github.com/verbund/verbund/node"
)

// recoverCommand is "verbund recover": bring a stopped node whose storage
// was refused back into service. One command family for every recovery
// (the Raft log here; snapshot restore and quorum-loss recovery join it).
func recoverCommand() Command {
	return group("recover", "recover a stopped node whose storage it refused to start on", []subcommand{
		{"raft-log", "move a damaged Raft log and the state aside (keeping term and vote) so the node catches up from the leader", recoverRaftLog},
		{"quorum", "rewrite a surviving voter's Raft configuration after the cluster lost its quorum for good (Raft's peers.json)", recoverQuorum},
	})
}

func recoverRaftLog(ctx context.Context, env *Env, args []string) error {
	fs := newFlagSet("recover raft-log --data DIR",
		"Move the Raft log segments of a STOPPED node aside (into DIR/raft/wal.damaged-<time>, kept\n"+
			"for analysis), keep its stable file (its Raft term and vote: without them it could vote\n"+
			"twice in one term), and move an old-format badger log (DIR/raft/log) aside after carrying\n"+
			"its term and vote over. The registry state (DIR/state) is moved aside too: a state ahead\n"+
			"of the log is what the node refuses to start on. Start the node again: it begins empty and\n"+
			"catches up from the leader, by snapshot if needed. Nothing the cluster acknowledged is lost while a\n"+
			"quorum of the other voters holds it. Not for a single-node cluster: its only copy of the\n"+
			"log is the damaged one; restore a snapshot instead (README, Operations).")
	var dir string
	fs.StringVar(&dir, "data", "", "the node's data `dir` (its --data-dir)")
	fs.check(func() error {
		if dir == "" {
			return fmt.Errorf("--data is required")
		}
		return nil
	})
	if _, err := fs.parse(env, args, 0, 0, ""); err != nil {
		return err
	}
	rec, err := node.RecoverRaftLog(dir, nil, time.Now())
	if err != nil {
		return err
	}
	w := env.Stdout
	if len(rec.Moved) > 0 {
		fmt.Fprintf(w, "Moved %d raft log file(s) to %s\n", len(rec.Moved), rec.AsideDir)
	} else {
		fmt.Fprintln(w, "No raft log segments to move")
	}
	if rec.OldFormatDir != "" {
		fmt.Fprintf(w, "Moved the old badger raft log to %s (term and vote carried over)\n", rec.OldFormatDir)
	}
	fmt.Fprintf(w, "Moved the registry state to %s (rebuilt from the leader)\n", rec.StateDir)
	fmt.Fprintf(w, "Kept term %d, vote %q\n", rec.Term, rec.VotedFor)
	fmt.Fprintln(w, "Start the node: it catches up from the leader.")
	return nil
}

func recoverQuorum(ctx context.Context, env *Env, args []string) error {
	fs := newFlagSet("recover quorum --data DIR --voters ID=HOST:PORT[,ID=HOST:PORT...]",
		"The documented equivalent of Raft's peers.json recovery, for a cluster that lost its quorum\n"+
			"for good (voters whose disks are gone). On each STOPPED surviving voter listed in --voters\n"+
			"(usually just one: pick the survivor with the highest applied index, see verbund status),\n"+
			"replay its Raft snapshot and log into its registry state, write a snapshot whose Raft\n"+
			"configuration is exactly --voters (each node id with the Raft address it is started with),\n"+
			"and compact the log. Start the node(s) again with their usual command line: they elect a\n"+
			"leader among themselves and serve; new nodes join them as usual. Entries the survivor holds\n"+
			"that were not yet committed become committed; entries only the lost voters held are gone.\n"+
			"Never run this while the lost voters might come back: two clusters would answer.")
	var dir, voters string
	fs.StringVar(&dir, "data", "", "the surviving node's data `dir` (its --data-dir)")
	fs.StringVar(&voters, "voters", "", "the new Raft configuration: `ID=HOST:PORT`,... (node ids and Raft addresses)")
	fs.check(func() error {
		if dir == "" || voters == "" {
			return fmt.Errorf("--data and --voters are required")
		}
		return nil
	})
	if _, err := fs.parse(env, args, 0, 0, ""); err != nil {
		return err
	}
	vs, err := node.ParseVoters(voters)
	if err != nil {
		return fmt.Errorf("--voters: %w", err)
	}
	rec, err := node.RecoverQuorum(dir, vs)
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "Recovered %s: registry applied index %d, snapshot at index %d with voters:\n", dir, rec.Applied, rec.SnapshotIndex)
	for _, v := range rec.Voters {
		fmt.Fprintf(env.Stdout, "  %s at %s\n", v.ID, v.Address)
	}
	fmt.Fprintln(env.Stdout, "Start the node(s) with their usual command line; new nodes join as usual.")
	return nil
}
