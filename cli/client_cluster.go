package cli

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"connectrpc.com/connect"

	nodev1 "github.com/verbund/verbund/proto/gen/verbund/node/v1"
	"github.com/verbund/verbund/proto/gen/verbund/node/v1/nodev1connect"
)

// membersCommand is "verbund members": the nodes of the network.
func membersCommand() Command {
	return Command{
		Name:    "members",
		Summary: "list the network's nodes as gossip sees them, with role, state and Raft suffrage",
		Run:     members,
	}
}

// clusterCommand is "verbund cluster": operating the network.
func clusterCommand() Command {
	return group("cluster", "operate the network: leadership, gossip keys", []subcommand{
		{"transfer-leadership", "ask the leader to hand leadership to another voter", transferLeadership},
		{"gossip-key", "rotate the gossip key on a node: install, use or remove KEY", gossipKey},
	})
}

// statusCommand is "verbund status": one node's state.
func statusCommand() Command {
	return Command{
		Name:    "status",
		Summary: "show the status of a node",
		Run:     status,
	}
}

func (o *clientOpts) cluster() nodev1connect.ClusterServiceClient {
	return nodev1connect.NewClusterServiceClient(o.http(), o.addr)
}

func members(ctx context.Context, env *Env, args []string) error {
	fs := newFlagSet("members [flags]", "List the nodes of the network as the node at --addr sees them through gossip:\nrole (voter, replica, member), state (alive, suspect, dead, left), Raft suffrage,\nleader and the software version each node runs.")
	o := clientFlags(fs, false)
	if _, err := fs.parse(env, args, 0, 0, ""); err != nil {
		return err
	}
	ctx, cancel := o.context(ctx)
	defer cancel()
	resp, err := o.cluster().ListMembers(ctx, connect.NewRequest(&nodev1.ListMembersRequest{}))
	if err != nil {
		return o.rpcErr(err)
	}
	return o.emit(env, resp.Msg, nil, func(w io.Writer) {
		t := newTable(w)
		row(t, "NODE", "ORG", "ROLE", "STATE", "RAFT", "LEADER", "VERSION", "API", "RAFT ADDR", "GOSSIP")
		for _, m := range resp.Msg.GetMembers() {
			leader := ""
			if m.GetLeader() {
				leader = "*"
			}
			row(t, m.GetNodeId(), m.GetOrganisationId(), m.GetRole(), m.GetState(), m.GetRaftSuffrage(), leader,
				m.GetVersion(), m.GetApiAddress(), m.GetRaftAddress(), m.GetGossipAddress())
		}
		t.Flush()
	})
}

func transferLeadership(ctx context.Context, env *Env, args []string) error {
	fs := newFlagSet("cluster transfer-leadership [--to NODE] [flags]", "Ask the leader to hand leadership to another voter (a server at --addr that is not\nthe leader relays the request with the token). Needs the token of an admin of the\nnetwork operator's node (verbund login).")
	o := clientFlags(fs, false)
	var to string
	fs.StringVar(&to, "to", "", "target node `id` (default: Raft chooses)")
	if _, err := fs.parse(env, args, 0, 0, ""); err != nil {
		return err
	}
	ctx, cancel := o.context(ctx)
	defer cancel()
	resp, err := o.cluster().TransferLeadership(ctx, connect.NewRequest(&nodev1.TransferLeadershipRequest{NodeId: to}))
	if err != nil {
		return o.rpcErr(err)
	}
	return o.emit(env, resp.Msg, nil, func(w io.Writer) { fmt.Fprintf(w, "leader is now %s\n", resp.Msg.GetLeaderId()) })
}

func gossipKey(ctx context.Context, env *Env, args []string) error {
	fs := newFlagSet("cluster gossip-key install|use|remove KEY [flags]", "Rotate the gossip encryption key on the node at --addr (needs the token of an\nadmin of the network operator's node). Rotate a network in three rounds: install on every node, then use on every\nnode, then remove the old key on every node. KEY is base64 (verbund certs gossip-key).")
	o := clientFlags(fs, false)
	pos, err := fs.parse(env, args, 2, 2, "operation and KEY")
	if err != nil {
		return err
	}
	op := map[string]nodev1.KeyOperation{
		"install": nodev1.KeyOperation_KEY_OPERATION_INSTALL,
		"use":     nodev1.KeyOperation_KEY_OPERATION_USE,
		"remove":  nodev1.KeyOperation_KEY_OPERATION_REMOVE,
	}[pos[0]]
	if op == nodev1.KeyOperation_KEY_OPERATION_UNSPECIFIED {
		return fs.usageErr("operation %q: want install, use or remove", pos[0])
	}
	ctx, cancel := o.context(ctx)
	defer cancel()
	resp, err := o.cluster().RotateGossipKey(ctx, connect.NewRequest(&nodev1.RotateGossipKeyRequest{Operation: op, Key: pos[1]}))
	if err != nil {
		return o.rpcErr(err)
	}
	return o.emit(env, resp.Msg, nil, func(w io.Writer) { fmt.Fprintf(w, "%s done; the node holds %d key(s)\n", pos[0], resp.Msg.GetKeys()) })
}

const statusSynopsis = "status [flags]"

func status(ctx context.Context, env *Env, args []string) error {
	fs := newFlagSet(statusSynopsis, "Show the status of the node at --addr: Raft state, leader, applied index, and\nkeys or certificates that expire soon.")
	o := clientFlags(fs, false)
	if _, err := fs.parse(env, args, 0, 0, ""); err != nil {
		return err
	}
	ctx, cancel := o.context(ctx)
	defer cancel()
	resp, err := o.node().GetStatus(ctx, connect.NewRequest(&nodev1.GetStatusRequest{}))
	if err != nil {
		return o.rpcErr(err)
	}
	m := resp.Msg
	return o.emit(env, m, nil, func(w io.Writer) {
		t := newKV(w)
		t.add("Node", m.GetNodeId())
		t.add("Organisation", m.GetOrganisationId())
		t.add("Raft state", m.GetRaftState())
		leader := m.GetLeaderId()
		if a := m.GetLeaderAddress(); a != "" {
			leader = strings.TrimSpace(leader + " at " + a)
		}
		t.add("Leader", leader)
		t.add("Applied index", fmt.Sprintf("%d", m.GetAppliedIndex()))
		t.add("Commit index", fmt.Sprintf("%d", m.GetCommitIndex()))
		t.add("Version", m.GetVersion())
		if ms := m.GetStartedAtUnixMs(); ms > 0 {
			up := time.Since(time.UnixMilli(ms)).Round(time.Second)
			t.add("Started", fmt.Sprintf("%s (up %s)", formatTime(ms), up))
		}
		t.flush()
		if ws := m.GetExpiryWarnings(); len(ws) > 0 {
			fmt.Fprintln(w, "\nExpiry warnings:")
			tw := newTable(w)
			row(tw, "  WHAT", "ID", "NOT AFTER", "REMAINING")
			for _, e := range ws {
				left := time.Duration(e.GetRemainingSeconds()) * time.Second
				rem := "expires in " + left.Round(time.Minute).String()
				if left < 0 {
					rem = "EXPIRED " + (-left).Round(time.Minute).String() + " ago"
				}
				row(tw, "  "+e.GetWhat(), e.GetId(), formatTime(e.GetNotAfterUnixMs()), rem)
			}
			tw.Flush()
		}
		if len(m.GetStats()) > 0 {
			fmt.Fprintln(w, "\nStats:")
			tw := newTable(w)
			keys := make([]string, 0, len(m.GetStats()))
			for k := range m.GetStats() {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			for _, k := range keys {
				row(tw, "  "+k, m.GetStats()[k])
			}
			tw.Flush()
		}
	})
}
