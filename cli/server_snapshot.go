package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/verbund/verbund/node"
)

// snapshotCommand is "verbund snapshot": backups of the registry, like
// etcdutl snapshot and consul snapshot (node/backup.go has the format).
func snapshotCommand() Command {
	return group("snapshot", "save, inspect and restore backups of the registry", []subcommand{
		{"save", "stream a consistent backup of the registry from the Raft leader into FILE", snapshotSave},
		{"inspect", "verify a backup file's checksum and show its index and what it holds", snapshotInspect},
		{"restore", "create the data dir of a new one-voter cluster from a backup file", snapshotRestore},
	})
}

func snapshotSave(ctx context.Context, env *Env, args []string) error {
	fs := newFlagSet("snapshot save FILE --addr NODE [--handovers]",
		"Ask the Raft leader at --addr (an ADMIN of that node: verbund login, --token or VERBUND_TOKEN)\n"+
			"for a backup of the registry and write it to FILE. The leader first applies everything the\n"+
			"cluster acknowledged (a Raft barrier), then snapshots the state at one applied index while it\n"+
			"keeps serving writes. FILE is written to FILE.part, checked (SHA-256) and renamed: a cut\n"+
			"transfer leaves no FILE. A follower answers with the leader's node id.\n"+
			"With --handovers: a backup of that node's own handover store instead (cases, outbox, inbox,\n"+
			"audit chain: the only copy of its organisation's cases), consistent while it keeps working.")
	var handovers bool
	fs.BoolVar(&handovers, "handovers", false, "back up the node's handover store, not the registry")
	o := clientFlags(fs, false)
	pos, err := fs.parse(env, args, 1, 1, "FILE")
	if err != nil {
		return err
	}
	file := pos[0]
	timeoutSet := false
	fs.Visit(func(f *flag.Flag) { timeoutSet = timeoutSet || f.Name == "timeout" })
	if timeoutSet && o.timeout > 0 { // no default bound: a large registry takes its time
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.timeout)
		defer cancel()
	}
	path := node.SnapshotPath
	if handovers {
		path = node.HandoverBackupPath
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, o.addr+path, nil)
	if err != nil {
		return err
	}
	resp, err := o.http().Do(req)
	if err != nil {
		return fmt.Errorf("snapshot save: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		msg := strings.TrimSpace(string(b))
		if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden || strings.Contains(msg, "unauthenticated") {
			return fmt.Errorf("snapshot save: %s: %s (an ADMIN of the node: verbund login --addr %s)", resp.Status, msg, o.addr)
		}
		return fmt.Errorf("snapshot save: %s: %s", resp.Status, msg)
	}
	part := file + ".part"
	f, err := os.OpenFile(part, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	n, err := io.Copy(f, resp.Body)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(part)
		return fmt.Errorf("snapshot save: transfer cut after %d bytes: %w", n, err)
	}
	info, err := inspectFile(part)
	if err != nil {
		_ = os.Remove(part)
		return fmt.Errorf("snapshot save: the received file is damaged, discarded: %w", err)
	}
	if err := os.Rename(part, file); err != nil {
		return err
	}
	if d, err := os.Open(filepath.Dir(file)); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	if handovers {
		fmt.Fprintf(env.Stdout, "Saved %s: handover store of %s, commit %d, audit head %d, %d bytes, from node %s\n",
			file, info.Header.Org, info.Header.Index, info.Header.AuditSeq, info.FileSize, info.Header.Node)
		return nil
	}
	fmt.Fprintf(env.Stdout, "Saved %s: index %d, term %d, %d bytes, %d records, from node %s\n",
		file, info.Header.Index, info.Header.Term, info.FileSize, info.Keys, info.Header.Node)
	return nil
}

func inspectFile(path string) (*node.BackupInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return node.InspectBackup(f)
}

func snapshotInspect(ctx context.Context, env *Env, args []string) error {
	fs := newFlagSet("snapshot inspect FILE",
		"Read a backup file whole, verify its SHA-256 and the snapshot's own CRC, and print its\n"+
			"header (format version, Raft index and term, operator, node, time), its size and the\n"+
			"number of records per kind. A damaged file is an error.")
	pos, err := fs.parse(env, args, 1, 1, "FILE")
	if err != nil {
		return err
	}
	info, err := inspectFile(pos[0])
	if err != nil {
		return err
	}
	h := info.Header
	kv := newKV(env.Stdout)
	kv.add("File", pos[0])
	kv.add("Format version", fmt.Sprint(h.FormatVersion))
	kv.add("Kind", h.Kind)
	if h.Kind == node.KindHandovers {
		kv.add("Organisation", h.Org)
		kv.add("Commit", fmt.Sprint(h.Index))
		kv.add("Audit head", fmt.Sprintf("%d %s", h.AuditSeq, h.AuditHash))
	} else {
		kv.add("Index", fmt.Sprint(h.Index))
		kv.add("Term", fmt.Sprint(h.Term))
	}
	kv.add("Operator", h.Operator)
	kv.add("Saved by node", h.Node)
	kv.add("Saved at", h.Created.Format(time.RFC3339))
	kv.add("Size", fmt.Sprintf("%d bytes (snapshot %d)", info.FileSize, h.Size))
	if h.Kind != node.KindHandovers {
		kv.add("Records", fmt.Sprint(info.Keys))
	}
	for _, k := range info.KindNames() {
		kv.add("  "+k, fmt.Sprint(info.Counts[k]))
	}
	kv.add("Checksum", "SHA-256 ok")
	kv.flush()
	return nil
}

func snapshotRestore(ctx context.Context, env *Env, args []string) error {
	fs := newFlagSet("snapshot restore FILE --data DIR (--node-id ID --raft-addr HOST:PORT | --handovers)",
		"Verify FILE, then create DIR (which must not exist or be empty) as the data dir of a NEW\n"+
			"one-voter cluster seeded from it: the snapshot goes into DIR/raft/snapshots with a Raft\n"+
			"configuration of one voter (ID at HOST:PORT, the --raft-addr the node will be started with).\n"+
			"Then start the node on DIR with that --node-id and --raft-addr (no --bootstrap needed; the\n"+
			"snapshot is its state): it restores the registry, elects itself and serves. Other nodes join\n"+
			"it with fresh data dirs (--join its gossip address), as in any cluster.\n"+
			"With --handovers: FILE is a handover store backup; it replaces the handover store of the\n"+
			"STOPPED node with data dir DIR (the old one is moved aside to DIR/handover.replaced-<time>).\n"+
			"At its next start the node records a restore marker in its audit chain naming the audit head\n"+
			"it lost, publishes no lower head, and logs what was lost (README: Backup and restore).")
	var dir, id, raftAddr string
	var handovers bool
	fs.BoolVar(&handovers, "handovers", false, "restore a handover store backup into the stopped node's data dir")
	fs.StringVar(&dir, "data", "", "the new node's data `dir` (its --data-dir)")
	fs.StringVar(&id, "node-id", "", "the new node's `id` (its --node-id)")
	fs.StringVar(&raftAddr, "raft-addr", "", "the new node's Raft `address` host:port (its --raft-addr)")
	fs.check(func() error {
		if handovers {
			if dir == "" {
				return fmt.Errorf("--data is required")
			}
			return nil
		}
		if dir == "" || id == "" || raftAddr == "" {
			return fmt.Errorf("--data, --node-id and --raft-addr are required")
		}
		return nil
	})
	pos, err := fs.parse(env, args, 1, 1, "FILE")
	if err != nil {
		return err
	}
	if handovers {
		h, rep, err := node.RestoreHandoverBackup(pos[0], dir, time.Now())
		if err != nil {
			return err
		}
		fmt.Fprintf(env.Stdout, "Restored the handover store of %s from %s: commit %d, audit head %d, %d cases in the inbox, %d outbox entries\n",
			h.Org, pos[0], rep.Commit, rep.AuditHead.Seq, rep.Cases, rep.Outbox)
		if rep.AsideDir != "" {
			fmt.Fprintf(env.Stdout, "The replaced store is at %s\n", rep.AsideDir)
		}
		fmt.Fprintln(env.Stdout, "Start the node: it records the restore in its audit chain. Everything written after the backup is lost (see the log).")
		return nil
	}
	h, err := node.RestoreBackup(pos[0], dir, id, raftAddr)
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "Restored %s into %s: index %d, term %d, one voter %s at %s\n", pos[0], dir, h.Index, h.Term, id, raftAddr)
	fmt.Fprintf(env.Stdout, "Start the node: verbund node --data-dir %s --node-id %s --raft-addr %s ...\n", dir, id, raftAddr)
	return nil
}
