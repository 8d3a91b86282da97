package node

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/verbund/verbund/federation/membership"
)

// reconcileLoop runs on every server; it acts only while this node leads.
func (n *Node) reconcileLoop(ctx context.Context) {
	t := time.NewTicker(n.cfg.ReconcileInterval)
	defer t.Stop()
	r := &reconciler{n: n, missing: map[raft.ServerID]time.Time{}}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if n.raft.State() == raft.Leader {
				if err := r.once(); err != nil {
					n.log.Warn("raft membership reconcile", "err", err)
				}
			} else {
				clear(r.missing)
			}
		}
	}
}

type reconciler struct {
	n       *Node
	mu      sync.Mutex
	missing map[raft.ServerID]time.Time // servers in Raft not alive in gossip, since
}

// once brings the Raft configuration in line with gossip: alive servers
// join (as voters up to the configured number, then as non-voters), voter-
// role non-voters are promoted when a voter slot is free, and servers that
// gossip reports left, or dead for longer than the grace period, are removed.
func (r *reconciler) once() error {
	n := r.n
	r.mu.Lock()
	defer r.mu.Unlock()
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return err
	}
	conf := f.Configuration()
	inRaft := map[raft.ServerID]raft.Server{}
	voters := 0
	for _, s := range conf.Servers {
		inRaft[s.ID] = s
		if s.Suffrage == raft.Voter {
			voters++
		}
	}
	gossip := map[raft.ServerID]membership.Member{}
	for _, m := range n.gossip.Members() {
		if m.Role == membership.RoleVoter || m.Role == membership.RoleReplica {
			gossip[raft.ServerID(m.NodeID)] = m
		}
	}
	now := time.Now()
	// Remove departed servers first, freeing voter slots.
	for id, s := range inRaft {
		if id == raft.ServerID(n.cfg.NodeID) {
			continue
		}
		m, ok := gossip[id]
		alive := ok && (m.State == membership.StateAlive || m.State == membership.StateSuspect)
		if alive {
			delete(r.missing, id)
			continue
		}
		since, seen := r.missing[id]
		if !seen {
			since = now
			if ok {
				since = m.Since
			}
			r.missing[id] = since
		}
		if (ok && m.State == membership.StateLeft) || now.Sub(since) >= n.cfg.DeadServerGrace {
			n.log.Info("removing server from raft", "id", id, "state", m.State, "since", since)
			if err := n.raft.RemoveServer(id, 0, 10*time.Second).Error(); err != nil {
				return fmt.Errorf("remove %s: %w", id, err)
			}
			delete(r.missing, id)
			if s.Suffrage == raft.Voter {
				voters--
			}
		}
	}
	for id, m := range gossip {
		if m.State != membership.StateAlive || m.RaftAddr == "" {
			continue
		}
		s, in := inRaft[id]
		if !in && !n.mayJoinRaft(m) {
			continue // the version gate: too old for the cluster's feature level
		}
		addr := raft.ServerAddress(m.RaftAddr)
		wantVoter := m.Role == membership.RoleVoter && (voters < n.cfg.Voters || (in && s.Suffrage == raft.Voter))
		switch {
		case !in && wantVoter, in && s.Suffrage != raft.Voter && wantVoter:
			n.log.Info("adding raft voter", "id", id, "addr", addr)
			if err := n.raft.AddVoter(id, addr, 0, 10*time.Second).Error(); err != nil {
				return fmt.Errorf("add voter %s: %w", id, err)
			}
			voters++
		case !in:
			n.log.Info("adding raft non-voter", "id", id, "addr", addr)
			if err := n.raft.AddNonvoter(id, addr, 0, 10*time.Second).Error(); err != nil {
				return fmt.Errorf("add non-voter %s: %w", id, err)
			}
		case in && s.Address != addr:
			n.log.Info("server address changed", "id", id, "from", s.Address, "to", addr)
			var err error
			if s.Suffrage == raft.Voter {
				err = n.raft.AddVoter(id, addr, 0, 10*time.Second).Error()
			} else {
				err = n.raft.AddNonvoter(id, addr, 0, 10*time.Second).Error()
			}
			if err != nil {
				return fmt.Errorf("update %s: %w", id, err)
			}
		}
	}
	return nil
}
