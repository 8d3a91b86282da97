package nodetest

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/verbund/verbund/node"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
)

// StateDump returns a server's whole registry state (its badger database)
// as key -> value, from one consistent view of a live node.
func StateDump(n *node.Node) (map[string]string, error) {
	if n == nil || n.FSM() == nil {
		return nil, errors.New("nodetest: state dump needs a running server")
	}
	out := map[string]string{}
	err := n.FSM().DB().View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.DefaultIteratorOptions)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			out[string(it.Item().Key())] = string(v)
		}
		return nil
	})
	return out, err
}

// ReplicatedDump returns the replicated part of any node's registry state
// (what a member's read copy holds: everything but the change feed, the
// dedupe records and the index markers), and the index it reflects.
func ReplicatedDump(n *node.Node) (map[string]string, uint64, error) {
	if n == nil {
		return nil, 0, errors.New("nodetest: node is down")
	}
	out := map[string]string{}
	idx, err := n.Reader().SnapshotWrites(context.Background(), 1000, func(ws []*registryv1.StateWrite) error {
		for _, w := range ws {
			out[string(w.GetKey())] = string(w.GetValue())
		}
		return nil
	})
	return out, idx, err
}

// DiffDumps describes up to max differences between two state dumps.
func DiffDumps(a, b map[string]string, max int) []string {
	var keys []string
	for k := range a {
		keys = append(keys, k)
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var out []string
	for _, k := range keys {
		va, ina := a[k]
		vb, inb := b[k]
		switch {
		case ina && !inb:
			out = append(out, fmt.Sprintf("%q only in the first (%d bytes)", k, len(va)))
		case !ina && inb:
			out = append(out, fmt.Sprintf("%q only in the second (%d bytes)", k, len(vb)))
		case va != vb:
			out = append(out, fmt.Sprintf("%q differs (%d vs %d bytes)", k, len(va), len(vb)))
		default:
			continue
		}
		if len(out) >= max {
			break
		}
	}
	return out
}

// Keys of the registry's badger layout (documented in registry/keys.go)
// that the state comparison must know: the applied index, written in the
// same transaction as every change, and the dedupe records of applied
// commands.
const (
	appliedKey = "m/applied"
	cmdPrefix  = "c/"
	cmdExpiry  = "t/"
)

// dumpIndex is the applied index a full state dump reflects.
func dumpIndex(d map[string]string) uint64 {
	v := d[appliedKey]
	if len(v) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64([]byte(v))
}

// Sentinel errors of CheckSame.
var (
	// ErrDiverged: two nodes reflect the same applied index but hold
	// different state.
	ErrDiverged = errors.New("nodetest: nodes diverged")
	// ErrNotSettled: the nodes did not reach the same applied index in time.
	ErrNotSettled = errors.New("nodetest: nodes did not settle on one index")
)

// SameState describes the state CheckSame found on every running node.
type SameState struct {
	Index      uint64 // the applied index every running node reflects
	Servers    int    // voters and replicas, compared key by key
	Members    int    // members, compared on the replicated keyspace
	Keys       int    // registry keys on a server (dedupe records excluded)
	Replicated int    // keys of the replicated keyspace
}

// CheckSame is the cluster's EnsureSame (after hashicorp/raft's harness):
// it waits until every running node has applied the same index, then
// compares, at that index,
//
//   - every server's whole registry database (voters and replicas), key by
//     key; the dedupe records of applied commands (c/, t/) are compared
//     too, but a difference there is only logged (as the Jepsen test's
//     final check always did);
//   - every node's replicated keyspace (what the change feed copies: all
//     but the feed, dedupe records and index markers), so a member's copy
//     must equal the servers'.
//
// Dumps are taken node by node while the cluster may still apply entries
// (the nodes' own audit-head publications, for example); only dumps that
// reflect one index are compared, and CheckSame retries until ctx ends.
// Different state at one index is final once a second round of dumps at
// that index confirms it (a member applies a large feed entry in more than
// one badger transaction, so a single round can catch one half-applied):
// CheckSame then returns ErrDiverged, naming each differing node and its
// first differing keys. It returns ErrNotSettled if the nodes never
// reflected one index before ctx ended.
func (c *Cluster) CheckSame(ctx context.Context) (SameState, error) {
	var (
		last       error
		divergedAt uint64 // index of the previous round's divergence, 0 if none
	)
	for {
		st, err := c.compareOnce()
		switch {
		case err == nil:
			return st, nil
		case errors.Is(err, ErrDiverged):
			if st.Index != 0 && divergedAt == st.Index {
				return st, err
			}
			divergedAt = st.Index
		default:
			divergedAt = 0
		}
		last = err
		select {
		case <-ctx.Done():
			if errors.Is(last, ErrDiverged) {
				return st, last
			}
			return st, fmt.Errorf("%w: %w", ErrNotSettled, last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// EnsureSame runs CheckSame for up to 15 seconds and fails the test if the
// nodes diverged or did not settle.
func (c *Cluster) EnsureSame(t testing.TB) SameState {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	st, err := c.CheckSame(ctx)
	if err != nil {
		t.Fatalf("EnsureSame: %v", err)
	}
	return st
}

// compareOnce takes one round of dumps. A difference is ErrDiverged only
// between dumps that reflect one index (st.Index).
func (c *Cluster) compareOnce() (st SameState, err error) {
	type live struct {
		m *Member
		n *node.Node
	}
	var nodes, servers []live
	for _, m := range c.Nodes {
		if n := m.Node(); n != nil {
			nodes = append(nodes, live{m, n})
			if n.FSM() != nil {
				servers = append(servers, live{m, n})
			}
		}
	}
	if len(servers) == 0 {
		return st, errors.New("no server is running")
	}
	ref := servers[0]
	// Cheap gate first: dumps are only worth taking at one index.
	want := ref.n.AppliedIndex()
	for _, x := range nodes {
		if got := x.n.AppliedIndex(); got != want {
			return st, fmt.Errorf("%s applied %d, %s applied %d", ref.m.ID, want, x.m.ID, got)
		}
	}
	full := make([]map[string]string, len(servers))
	for i, x := range servers {
		if full[i], err = StateDump(x.n); err != nil {
			return st, fmt.Errorf("dump %s: %w", x.m.ID, err)
		}
		if got, want := dumpIndex(full[i]), dumpIndex(full[0]); got != want {
			return st, fmt.Errorf("%s dumped at %d, %s at %d", servers[0].m.ID, want, x.m.ID, got)
		}
	}
	st.Index = dumpIndex(full[0])
	repl := make([]map[string]string, len(nodes))
	for i, x := range nodes {
		var idx uint64
		if repl[i], idx, err = ReplicatedDump(x.n); err != nil {
			return st, fmt.Errorf("replicated dump %s: %w", x.m.ID, err)
		}
		if idx != st.Index {
			return st, fmt.Errorf("%s dumped at %d, %s's replicated state at %d", servers[0].m.ID, st.Index, x.m.ID, idx)
		}
	}
	var refRepl map[string]string
	for i, x := range nodes {
		if x.m == ref.m {
			refRepl = repl[i]
		}
	}
	var diverged []error
	refState := withoutPrefixes(full[0], cmdPrefix, cmdExpiry)
	for i, x := range servers[1:] {
		if diff := DiffDumps(refState, withoutPrefixes(full[i+1], cmdPrefix, cmdExpiry), 5); len(diff) > 0 {
			diverged = append(diverged, fmt.Errorf("registry state of %s and %s (%s) differs at index %d: %s",
				ref.m.ID, x.m.ID, x.m.Role, st.Index, strings.Join(diff, "; ")))
		} else if diff := DiffDumps(full[0], full[i+1], 5); len(diff) > 0 {
			c.t.Logf("note: dedupe records (c/, t/) of %s and %s differ: %s", ref.m.ID, x.m.ID, strings.Join(diff, "; "))
		}
	}
	for i, x := range nodes {
		if x.m == ref.m {
			continue
		}
		if diff := DiffDumps(refRepl, repl[i], 5); len(diff) > 0 {
			diverged = append(diverged, fmt.Errorf("replicated state of %s and %s (%s) differs at index %d: %s",
				ref.m.ID, x.m.ID, x.m.Role, st.Index, strings.Join(diff, "; ")))
		}
	}
	if len(diverged) > 0 {
		return st, fmt.Errorf("%w: %w", ErrDiverged, errors.Join(diverged...))
	}
	st.Servers, st.Members = len(servers), len(nodes)-len(servers)
	st.Keys, st.Replicated = len(refState), len(refRepl)
	return st, nil
}

// withoutPrefixes returns d without the keys under the given prefixes.
func withoutPrefixes(d map[string]string, prefixes ...string) map[string]string {
	out := make(map[string]string, len(d))
next:
	for k, v := range d {
		for _, p := range prefixes {
			if strings.HasPrefix(k, p) {
				continue next
			}
		}
		out[k] = v
	}
	return out
}
