package node

import (
	"context"
	"errors"
	"fmt"

	"github.com/hashicorp/raft"

	"github.com/verbund/verbund/node/auth"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
	"github.com/verbund/verbund/registry"
)

// Publish publishes signed commands from any role, exactly as the
// PublishService does: admitted here on the leader (registry.Admission),
// forwarded to the leader otherwise. It returns one result per command, in
// order, and the index the results are visible at.
func (n *Node) Publish(ctx context.Context, signed []string) ([]*registryv1.CommandResult, uint64, error) {
	return n.submit(ctx, 0, signed)
}

// submit is the one write path of the node: proposed here on the leader,
// forwarded to the leader otherwise, and also when leadership moved during
// the call (the commands' ids make a repeat harmless). hop counts the
// forwards the request has already taken. The client is never bounced.
func (n *Node) submit(ctx context.Context, hop int, signed []string) ([]*registryv1.CommandResult, uint64, error) {
	if n.isServer() && n.raft.State() == raft.Leader {
		res, idx, err := n.admission.Publish(ctx, signed)
		if !errors.Is(err, registry.ErrNotLeader) {
			return res, idx, err
		}
	}
	return n.forwardPublish(ctx, hop, signed)
}

// publishOwn signs cmd with the organisation's current key and submits it.
// A refused command is returned as its error. It returns the commit index.
func (n *Node) publishOwn(ctx context.Context, cmd *registryv1.Command) (uint64, error) {
	cmd.IssuedAtUnixMs = n.cfg.Clock().UnixMilli() // this node's clock, not the process's
	if cmd.Actor == "" {
		cmd.Actor = auth.FromContext(ctx).Actor() // the person whose call this is (key rotation), if any
	}
	jws, err := registry.SignCommand(cmd, n.keys.SigningKey())
	if err != nil {
		return 0, err
	}
	res, idx, err := n.submit(ctx, 0, []string{jws})
	if err != nil {
		return 0, err
	}
	if len(res) != 1 {
		return 0, fmt.Errorf("%w: %d results for one command", registry.ErrUnavailable, len(res))
	}
	if c := res[0].GetErrorCode(); c != "" {
		return 0, registry.ErrorFromCode(c, res[0].GetErrorMessage())
	}
	return idx, nil
}
