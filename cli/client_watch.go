package cli

import (
	"context"
	"fmt"
	"time"

	"connectrpc.com/connect"

	nodev1 "github.com/verbund/verbund/proto/gen/verbund/node/v1"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
	"github.com/verbund/verbund/proto/gen/verbund/registry/v1/registryv1connect"
)

// watchCommand is "verbund watch": the registry's change feed.
func watchCommand() Command {
	return Command{
		Name:    "watch",
		Summary: "print registry changes as they happen (the change feed)",
		Run:     watch,
	}
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
	client := registryv1connect.NewWatchServiceClient(o.http(), o.addr)
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
