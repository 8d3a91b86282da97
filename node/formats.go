package node

import (
	"github.com/verbund/verbund/internal/storeformat"
)

// The on-disk formats of the node's stores (see internal/storeformat).
// Each store's directory holds a FORMAT marker, checked before the store is
// opened: a newer format is refused, an older one migrated. Raise Current
// and register a Migration (From = the old Current) when a store's layout
// changes; a release that raises it cannot be rolled back without a
// backup taken before the upgrade (the older binary refuses the store).
var (
	formatState = storeformat.Store{Kind: "registry-state", Current: 1}
	// The Raft directory: the log (raftlog) and the snapshots.
	formatRaft     = storeformat.Store{Kind: "raft", Current: 1}
	formatHandover = storeformat.Store{Kind: "handover", Current: 1}
	formatUsers    = storeformat.Store{Kind: "users", Current: 1}
)

// prepareStore checks (and migrates) the store in dir before it is opened.
func (n *Node) prepareStore(s storeformat.Store, dir string) error {
	_, err := s.Prepare(dir, n.log)
	return err
}
