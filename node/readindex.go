package node

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/raft"

	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
	"github.com/verbund/verbund/registry"
)

// readBarrier prepares a read: for LINEARIZABLE it obtains a read index
// from the leader (itself, or over the network) and waits until the local
// state reflects it; for min_index it waits until that index is applied.
// It reports whether the read is linearizable.
func (n *Node) readBarrier(ctx context.Context, o *registryv1.ReadOptions) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, n.cfg.ReadTimeout)
	defer cancel()
	if o.GetMinIndex() > 0 {
		if err := n.state.WaitApplied(ctx, o.GetMinIndex()); err != nil {
			return false, fmt.Errorf("%w: %v", registry.ErrUnavailable, err)
		}
	}
	if o.GetConsistency() != registryv1.Consistency_CONSISTENCY_LINEARIZABLE {
		return false, nil
	}
	idx, err := n.readIndex(ctx, 0)
	if err != nil {
		return false, err
	}
	if err := n.state.WaitApplied(ctx, idx); err != nil {
		return false, fmt.Errorf("%w: %v", registry.ErrUnavailable, err)
	}
	return true, nil
}

// readIndex returns an index at which a read reflects every write committed
// before the call: the leader's own (leaderReadIndex), or the leader's asked
// over the network (hop forwards already taken).
func (n *Node) readIndex(ctx context.Context, hop int) (uint64, error) {
	if n.isServer() && n.raft.State() == raft.Leader {
		return n.leaderReadIndex(ctx)
	}
	return n.forwardReadIndex(ctx, hop)
}

// leaderReadIndex returns an index at which the state reflects every write
// committed before the call: the leader confirms with a quorum that it still
// leads (so a deposed leader in a minority cannot answer), and waits until
// its own state has applied its commit index. The index returned is the
// leader's applied index, which followers' state machines also reach.
func (n *Node) leaderReadIndex(ctx context.Context) (uint64, error) {
	term := n.raft.CurrentTerm()
	// A new leader only knows the commit index once an entry of its own
	// term is committed: a barrier establishes that once per term.
	if n.readyTerm.Load() != term {
		n.readyMu.Lock()
		if n.readyTerm.Load() != term {
			if err := n.raft.Barrier(n.cfg.ReadTimeout).Error(); err != nil {
				n.readyMu.Unlock()
				return 0, fmt.Errorf("%w: leader barrier: %v", registry.ErrUnavailable, err)
			}
			n.readyTerm.Store(term)
		}
		n.readyMu.Unlock()
	}
	commit := n.raft.CommitIndex()
	// Confirm with a quorum that we still lead, in the same term the barrier
	// ran in: a deposed leader, or one re-elected in between, cannot answer.
	if err := n.raft.VerifyLeader().Error(); err != nil {
		return 0, fmt.Errorf("%w: leadership not confirmed: %v", registry.ErrUnavailable, err)
	}
	if n.raft.CurrentTerm() != term || n.readyTerm.Load() != term {
		return 0, fmt.Errorf("%w: leadership changed during the read", registry.ErrUnavailable)
	}
	if err := n.waitStateAt(ctx, commit); err != nil {
		return 0, fmt.Errorf("%w: %v", registry.ErrUnavailable, err)
	}
	return n.fsm.AppliedIndex(), nil
}

// waitStateAt waits until the registry state reflects every entry up to
// index. The FSM only sees command entries, so its applied index stays
// behind Raft-internal entries (no-op, barrier, configuration) at the end of
// the log; those change no state, so only command entries are waited for.
func (n *Node) waitStateAt(ctx context.Context, index uint64) error {
	for {
		applied := n.fsm.AppliedIndex()
		if applied >= index {
			return nil
		}
		next := uint64(0)
		for i := applied + 1; i <= index; i++ {
			var l raft.Log
			if err := n.logs.GetLog(i, &l); err != nil || l.Type == raft.LogCommand {
				next = i // a command (or compacted away: wait for it too)
				break
			}
		}
		if next == 0 {
			return nil
		}
		if err := n.fsm.WaitApplied(ctx, next); err != nil {
			return err
		}
	}
}

// readInfo describes a read for its response.
func (n *Node) readInfo(index uint64, lin bool) *registryv1.ReadInfo {
	ri := &registryv1.ReadInfo{Index: index, Linearizable: lin, NodeId: n.cfg.NodeID}
	if !lin {
		ri.StalenessMs = n.staleness().Milliseconds()
	}
	return ri
}

// staleness is how long ago this node last heard from the source of its
// state: 0 on the leader, the last leader contact on a follower, the last
// change feed message on a member (-1 ms: never).
func (n *Node) staleness() time.Duration {
	if !n.isServer() {
		last := n.lastFeed.Load()
		if last == 0 {
			return -time.Millisecond
		}
		return time.Since(time.UnixMilli(last))
	}
	if n.raft.State() == raft.Leader {
		return 0
	}
	lc := n.raft.LastContact()
	if lc.IsZero() {
		return -time.Millisecond
	}
	return time.Since(lc)
}
