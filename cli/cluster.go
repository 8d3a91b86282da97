package cli

import (
	"context"
	"fmt"
	"io"
	"time"

	"connectrpc.com/connect"

	nodev1 "github.com/verbund/verbund/proto/gen/verbund/node/v1"
	"github.com/verbund/verbund/proto/gen/verbund/node/v1/nodev1connect"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
	"github.com/verbund/verbund/proto/gen/verbund/registry/v1/registryv1connect"
)

func init() {
	Register(Command{
		Name:    "members",
		Summary: "list the network's nodes as gossip sees them, with role, state and Raft suffrage",
		Run:     members,
	})
	Register(Command{
		Name:    "watch",
		Summary: "print registry changes as they happen (the change feed)",
		Run:     watch,
	})
	Register(group("cluster", "operate the network: leadership, gossip keys", []subcommand{
		{"transfer-leadership", "ask the leader to hand leadership to another voter", transferLeadership},
		{"gossip-key", "rotate the gossip key on a node: install, use or remove KEY", gossipKey},
	}))
}

func (o *clientOpts) cluster() nodev1connect.ClusterServiceClient {
	return nodev1connect.NewClusterServiceClient(httpClient, o.addr)
}

func members(ctx context.Context, env *Env, args []string) error {
	fs := newFlagSet("members [flags]", "List the nodes of the network as the node at --addr sees them through gossip:\nrole (voter, replica, member), state (alive, suspect, dead, left), Raft suffrage and leader.")
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
		row(t, "NODE", "ORG", "ROLE", "STATE", "RAFT", "LEADER", "API", "RAFT ADDR", "GOSSIP")
		for _, m := range resp.Msg.GetMembers() {
			leader := ""
			if m.GetLeader() {
				leader = "*"
			}
			row(t, m.GetNodeId(), m.GetOrganisationId(), m.GetRole(), m.GetState(), m.GetRaftSuffrage(), leader,
				m.GetApiAddress(), m.GetRaftAddress(), m.GetGossipAddress())
		}
		t.Flush()
	})
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func watch(ctx context.Context, env *Env, args []string) error {
	fs := newFlagSet("watch [--after INDEX] [flags]", "Print every registry change after --after (default: from now on; 0 starts with a\nsnapshot of everything) as it happens, one line per change (-o json: one JSON\nobject per message). Runs until interrupted.")
	o := clientFlags(fs, false)
	var after uint64
	var fromNow bool = true
	fs.Func("after", "start after this Raft `index` (0: a snapshot first)", func(s string) error {
		_, err := fmt.Sscan(s, &after)
		fromNow = false
		return err
	})
	if _, err := fs.parse(env, args, 0, 0, ""); err != nil {
		return err
	}
	if fromNow {
		st, err := o.node().GetStatus(ctx, connect.NewRequest(&nodev1.GetStatusRequest{}))
		if err != nil {
			return o.rpcErr(err)
		}
		after = st.Msg.GetAppliedIndex()
	}
	client := registryv1connect.NewWatchServiceClient(httpClient, o.addr)
	stream, err := client.Watch(ctx, connect.NewRequest(&registryv1.WatchRequest{AfterIndex: after}))
	if err != nil {
		return o.rpcErr(err)
	}
	defer stream.Close()
	if !o.json() {
		fmt.Fprintf(env.Stderr, "watching %s after index %d (Ctrl-C to stop)\n", o.addr, after)
	}
	for stream.Receive() {
		m := stream.Msg()
		if o.json() {
			if m.GetHeartbeat() {
				continue
			}
			if err := writeJSON(env.Stdout, m); err != nil {
				return err
			}
			continue
		}
		for _, c := range m.GetChanges() {
			op := "put"
			if c.GetDeleted() {
				op = "delete"
			}
			name := ""
			switch e := c.GetEntity().(type) {
			case *registryv1.Change_Organisation:
				name = e.Organisation.GetName()
			case *registryv1.Change_Service:
				name = e.Service.GetName()
			case *registryv1.Change_Offering:
				name = e.Offering.GetName()
			}
			snap := ""
			if m.GetSnapshot() {
				snap = " (snapshot)"
			}
			fmt.Fprintf(env.Stdout, "%s  index %-8d %-6s %-13s %s  %s%s\n", time.UnixMilli(m.GetSentAtUnixMs()).Format("15:04:05.000"),
				c.GetIndex(), op, kindOfChange(c.GetKind()), c.GetId(), name, snap)
		}
	}
	if ctx.Err() != nil {
		return nil
	}
	return o.rpcErr(stream.Err())
}

func kindOfChange(k registryv1.ChangeKind) string {
	switch k {
	case registryv1.ChangeKind_CHANGE_KIND_ORGANISATION:
		return "organisation"
	case registryv1.ChangeKind_CHANGE_KIND_SERVICE:
		return "service"
	case registryv1.ChangeKind_CHANGE_KIND_OFFERING:
		return "offering"
	case registryv1.ChangeKind_CHANGE_KIND_AUDIT_HEAD:
		return "audit-head"
	}
	return "?"
}

func transferLeadership(ctx context.Context, env *Env, args []string) error {
	fs := newFlagSet("cluster transfer-leadership [--to NODE] [flags]", "Ask the leader (--addr must be the leader, from this machine or a peer) to hand\nleadership to another voter.")
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
	fs := newFlagSet("cluster gossip-key install|use|remove KEY [flags]", "Rotate the gossip encryption key on the node at --addr (from this machine or a\npeer). Rotate a network in three rounds: install on every node, then use on every\nnode, then remove the old key on every node. KEY is base64 (verbund certs gossip-key).")
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
