package node

import (
	"context"
	"fmt"

	"connectrpc.com/connect"

	"github.com/verbund/verbund/node/auth"
	nodev1 "github.com/verbund/verbund/proto/gen/verbund/node/v1"
	"github.com/verbund/verbund/proto/gen/verbund/node/v1/nodev1connect"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
	"github.com/verbund/verbund/registry"
)

// consoleAPI serves the ConsoleService: a person of this node has the node
// sign registry mutations for its organisation. The policy (access.go)
// lets PUBLISHERs and APPROVERs in; which of the two each mutation needs is
// decided here (mutationRole). The registry then judges the signed command
// like any other (who may change what is its rule, not the node's).
type consoleAPI struct{ n *Node }

var _ nodev1connect.ConsoleServiceHandler = consoleAPI{}

// mutationRole is the role a person needs to have the node sign m:
// PUBLISHER for the organisation's own record, join request, offerings and
// catalogue entries; APPROVER for governance decisions about others
// (status changes, key recovery, authorisations, other organisations'
// records).
func (n *Node) mutationRole(m *registryv1.Mutation) (nodev1.Role, error) {
	switch op := m.GetOp().(type) {
	case *registryv1.Mutation_PutOrganisation:
		if op.PutOrganisation.GetId() == n.cfg.OrgID {
			return nodev1.Role_ROLE_PUBLISHER, nil
		}
		return nodev1.Role_ROLE_APPROVER, nil
	case *registryv1.Mutation_RequestJoin, *registryv1.Mutation_PutOffering, *registryv1.Mutation_DeleteOffering,
		*registryv1.Mutation_PutService, *registryv1.Mutation_PutNextSteps, *registryv1.Mutation_DeleteNextSteps:
		return nodev1.Role_ROLE_PUBLISHER, nil
	case *registryv1.Mutation_ChangeStatus, *registryv1.Mutation_RecoverKeys, *registryv1.Mutation_PutAuthorisation,
		*registryv1.Mutation_WithdrawAuthorisation:
		return nodev1.Role_ROLE_APPROVER, nil
	case *registryv1.Mutation_PutAuditHead:
		return 0, fmt.Errorf("%w: the node publishes its audit head itself", registry.ErrInvalidArgument)
	}
	return 0, fmt.Errorf("%w: unknown mutation %T", registry.ErrInvalidArgument, m.GetOp())
}

func (a consoleAPI) Submit(ctx context.Context, req *connect.Request[nodev1.SubmitRequest]) (*connect.Response[nodev1.SubmitResponse], error) {
	n := a.n
	id := auth.FromContext(ctx)
	muts := req.Msg.GetMutations()
	if len(muts) == 0 {
		return nil, fmt.Errorf("%w: no mutations", registry.ErrInvalidArgument)
	}
	for i, m := range muts {
		role, err := n.mutationRole(m)
		if err != nil {
			return nil, err
		}
		if !id.HasRole(role) {
			return nil, fmt.Errorf("%w: rule console: mutation %d (%T) needs role %s; %s has %v", registry.ErrPermissionDenied,
				i, m.GetOp(), roleName(role), id.User.GetUsername(), auth.RoleNames(id.User.GetRoles()))
		}
	}
	cmd := registry.NewCommand(n.cfg.OrgID, muts...)
	if cid := req.Msg.GetCommandId(); cid != "" {
		cmd.Id = cid
	}
	cmd.Actor = id.Actor()
	cmd.IssuedAtUnixMs = n.cfg.Clock().UnixMilli()
	jws, err := registry.SignCommand(cmd, n.keys.SigningKey())
	if err != nil {
		return nil, err
	}
	res, idx, err := n.submit(ctx, 0, []string{jws})
	if err != nil {
		return nil, err
	}
	if len(res) != 1 {
		return nil, fmt.Errorf("%w: %d results for one command", registry.ErrUnavailable, len(res))
	}
	n.log.Info("console command", "id", cmd.GetId(), "actor", cmd.GetActor(), "mutations", len(muts), "error_code", res[0].GetErrorCode())
	return connect.NewResponse(&nodev1.SubmitResponse{Result: res[0], Index: idx}), nil
}
