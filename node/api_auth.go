package node

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"connectrpc.com/connect"
	jose "github.com/go-jose/go-jose/v4"
	"google.golang.org/protobuf/proto"

	"github.com/verbund/verbund/keys"
	"github.com/verbund/verbund/node/auth"
	nodev1 "github.com/verbund/verbund/proto/gen/verbund/node/v1"
	"github.com/verbund/verbund/proto/gen/verbund/node/v1/nodev1connect"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
	"github.com/verbund/verbund/registry"
)

// authAPI serves the AuthService: sign-in (open, rate-limited) and the
// management of this node's users (ADMIN; access.go).
type authAPI struct{ n *Node }

var _ nodev1connect.AuthServiceHandler = authAPI{}

// authError maps the user store's errors to Connect codes.
func authError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, auth.ErrNotFound):
		return connect.NewError(connect.CodeNotFound, err)
	case errors.Is(err, auth.ErrExists):
		return connect.NewError(connect.CodeAlreadyExists, err)
	case errors.Is(err, auth.ErrInvalid):
		return connect.NewError(connect.CodeInvalidArgument, err)
	case errors.Is(err, auth.ErrBadCredential), errors.Is(err, auth.ErrDisabled):
		// One answer for unknown user, wrong password and disabled user.
		return connect.NewError(connect.CodeUnauthenticated, errors.New("sign-in failed: unknown user, wrong password or user disabled"))
	}
	return err
}

func (a authAPI) SignIn(ctx context.Context, req *connect.Request[nodev1.SignInRequest]) (*connect.Response[nodev1.SignInResponse], error) {
	n := a.n
	u, err := n.users.Authenticate(req.Msg.GetUsername(), req.Msg.GetPassword())
	if err != nil {
		n.log.Info("sign-in refused", "username", req.Msg.GetUsername(), "from", auth.FromContext(ctx).Addr)
		return nil, authError(err)
	}
	tok, exp, err := n.IssueToken(u.GetUsername())
	if err != nil {
		return nil, err
	}
	n.log.Info("signed in", "username", u.GetUsername())
	return connect.NewResponse(&nodev1.SignInResponse{Token: tok, ExpiresAtUnixMs: exp.UnixMilli(), User: u}), nil
}

func (a authAPI) WhoAmI(ctx context.Context, req *connect.Request[nodev1.WhoAmIRequest]) (*connect.Response[nodev1.WhoAmIResponse], error) {
	id := auth.FromContext(ctx)
	return connect.NewResponse(&nodev1.WhoAmIResponse{User: id.User, Method: id.Method, OrganisationId: id.Org}), nil
}

func (a authAPI) ListUsers(ctx context.Context, req *connect.Request[nodev1.ListUsersRequest]) (*connect.Response[nodev1.ListUsersResponse], error) {
	users, err := a.n.users.List()
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&nodev1.ListUsersResponse{Users: users}), nil
}

func (a authAPI) CreateUser(ctx context.Context, req *connect.Request[nodev1.CreateUserRequest]) (*connect.Response[nodev1.CreateUserResponse], error) {
	u, pw, err := a.n.users.Create(req.Msg.GetUser(), req.Msg.GetPassword())
	if err != nil {
		return nil, authError(err)
	}
	a.n.log.Info("user created", "username", u.GetUsername(), "roles", auth.RoleNames(u.GetRoles()), "by", auth.FromContext(ctx).Actor())
	return connect.NewResponse(&nodev1.CreateUserResponse{User: u, Password: pw}), nil
}

func (a authAPI) UpdateUser(ctx context.Context, req *connect.Request[nodev1.UpdateUserRequest]) (*connect.Response[nodev1.UpdateUserResponse], error) {
	u, err := a.n.users.Update(req.Msg)
	if err != nil {
		return nil, authError(err)
	}
	a.n.log.Info("user updated", "username", u.GetUsername(), "roles", auth.RoleNames(u.GetRoles()), "disabled", u.GetDisabled(), "by", auth.FromContext(ctx).Actor())
	return connect.NewResponse(&nodev1.UpdateUserResponse{User: u}), nil
}

func (a authAPI) ResetPassword(ctx context.Context, req *connect.Request[nodev1.ResetPasswordRequest]) (*connect.Response[nodev1.ResetPasswordResponse], error) {
	pw, err := a.n.users.SetPassword(req.Msg.GetUsername(), req.Msg.GetPassword())
	if err != nil {
		return nil, authError(err)
	}
	a.n.log.Info("password reset", "username", req.Msg.GetUsername(), "by", auth.FromContext(ctx).Actor())
	return connect.NewResponse(&nodev1.ResetPasswordResponse{Password: pw}), nil
}

// IssueToken signs a bearer token for an enabled user of this node with
// the organisation's current signing key (AuthService.SignIn, after the
// password check; in-process test harnesses call it directly).
func (n *Node) IssueToken(username string) (string, time.Time, error) {
	u, err := n.users.Get(username)
	if err != nil {
		return "", time.Time{}, err
	}
	if u.GetDisabled() {
		return "", time.Time{}, fmt.Errorf("%w: %s", auth.ErrDisabled, username)
	}
	return auth.IssueToken(n.keys.SigningKey(), n.cfg.OrgID, n.cfg.NodeID, u, n.cfg.Clock(), n.cfg.TokenTTL)
}

// Users is the node's user store.
func (n *Node) Users() *auth.Store { return n.users }

// verifyToken checks a bearer token (auth.VerifyToken) and says whose it
// is. A token of this node (iss = this organisation, node = this node)
// names a user who must exist and be enabled here now; roles come from the
// store, not the token, so disabling a user or taking a role away takes
// effect at once. A token of any other node is accepted only if its issuer
// is the registry's network operator and it claims ADMIN: the operator's
// admins administer the cluster on every node (operatorAdmin in access.go).
func (n *Node) verifyToken(tok string) (auth.Identity, error) {
	c, err := auth.VerifyToken(tok, n.tokenKey, n.cfg.Clock(), auth.DefaultSkew)
	if err != nil {
		return auth.Identity{}, err
	}
	if c.Issuer == n.cfg.OrgID && c.Node == n.cfg.NodeID {
		u, err := n.users.Get(c.Subject)
		if err != nil {
			return auth.Identity{}, fmt.Errorf("token of %s: %w", c.Subject, err)
		}
		if u.GetDisabled() {
			return auth.Identity{}, fmt.Errorf("token of %s: %w", c.Subject, auth.ErrDisabled)
		}
		return auth.Identity{Kind: auth.Person, User: u, Org: c.Issuer, Node: c.Node, Method: "token"}, nil
	}
	op, err := n.reader.Operator()
	if err != nil || c.Issuer != op || !slices.Contains(c.Roles, roleName(nodev1.Role_ROLE_ADMIN)) {
		return auth.Identity{}, fmt.Errorf("%w: token of %s on node %s of %s: tokens are valid only on the node that issued them (except the network operator's admins)", auth.ErrInvalidToken, c.Subject, c.Node, c.Issuer)
	}
	u := &nodev1.User{Username: c.Subject, DisplayName: c.Subject, Roles: []nodev1.Role{nodev1.Role_ROLE_ADMIN}}
	return auth.Identity{Kind: auth.OperatorAdmin, User: u, Org: c.Issuer, Node: c.Node, Method: "token"}, nil
}

// tokenKey resolves a token's signing key under the registry's key rule
// (keys.SigningKeyAt at now), so rotated keys keep verifying through their
// grace period and revoked ones stop at once. This node's own
// organisation is judged by its keys only, not its status: its people
// keep signing in while it is pending or suspended (what they may do is
// the registry's and the handover domain's decision). A key the registry
// does not list (an organisation not yet registered, or keys not yet
// published) is accepted only if it is this node's current signing key.
func (n *Node) tokenKey(org, kid string) (jose.JSONWebKey, error) {
	own := org == n.cfg.OrgID
	cur := n.keys.SigningKey()
	rec, _, err := n.reader.Organisation(org)
	if err != nil {
		if own && errors.Is(err, registry.ErrNotFound) && kid == cur.KeyID {
			return cur.Public(), nil
		}
		return jose.JSONWebKey{}, err
	}
	if own {
		rec = proto.Clone(rec).(*registryv1.Organisation)
		rec.Status, rec.InactiveSinceIndex = registryv1.OrganisationStatus_ORGANISATION_STATUS_ACTIVE, 0
	}
	pk, err := keys.SigningKeyAt(rec, kid, keys.Now(n.cfg.Clock()))
	if err != nil {
		if own && errors.Is(err, keys.ErrUnknownKey) && kid == cur.KeyID {
			return cur.Public(), nil
		}
		return jose.JSONWebKey{}, err
	}
	return keys.ParsePublic(pk)
}
