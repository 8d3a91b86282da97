package nodetest

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/dgraph-io/badger/v4"

	"github.com/verbund/verbund/node"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
)

// StateDump returns a server's whole registry state (its badger database)
// as key -> value, without the keys under the skipped prefixes. Call it on
// a quiet cluster: it reads one consistent view of a live node.
func StateDump(n *node.Node, skip ...string) (map[string]string, error) {
	if n == nil || n.FSM() == nil {
		return nil, errors.New("nodetest: state dump needs a running server")
	}
	out := map[string]string{}
	err := n.FSM().DB().View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.DefaultIteratorOptions)
		defer it.Close()
	next:
		for it.Rewind(); it.Valid(); it.Next() {
			k := string(it.Item().Key())
			for _, p := range skip {
				if strings.HasPrefix(k, p) {
					continue next
				}
			}
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			out[k] = string(v)
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
