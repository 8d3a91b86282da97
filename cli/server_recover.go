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
