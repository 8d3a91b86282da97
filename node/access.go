package node

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"
	"github.com/hashicorp/raft"

	"github.com/verbund/verbund/federation/handover"
	"github.com/verbund/verbund/federation/membership"
	"github.com/verbund/verbund/federation/peertls"
	"github.com/verbund/verbund/node/auth"
	"github.com/verbund/verbund/proto/gen/verbund/federation/v1/federationv1connect"
	nodev1 "github.com/verbund/verbund/proto/gen/verbund/node/v1"
	"github.com/verbund/verbund/proto/gen/verbund/node/v1/nodev1connect"
	"github.com/verbund/verbund/proto/gen/verbund/registry/v1/registryv1connect"
	"github.com/verbund/verbund/registry"
)

// The node's access policy: the listeners it serves and, per procedure (or
// page), who may call it on which listener. Handlers do not check callers
// (except ConsoleService, whose role follows the mutations it is given);
// a new RPC or page is unreachable until it has a row here.
//
// Listeners:
//
//   - public (Config.HTTPAddr): the API for everyone: queries, signed
//     Publish, status, health, reflection, the pages, sign-in; and the
//     people of this node (clerks, publishers, approvers, admins), each
//     authenticated by a bearer token the node signed (AuthService.SignIn)
//     or, with Config.PublicTLS, a client certificate registered to a user.
//   - peer (Config.PeerAddr, with TLS): other nodes of the network, each
//     authenticated by a client certificate of the network's CA and
//     authorised by what it is: forwarded Publish, the change feed,
//     handover deliveries and case timelines for any node; ReadIndex for
//     servers of this node's Raft configuration and its member nodes;
//     cluster administration only with a network operator admin's token.
//     Never the people's API.
//   - admin (Config.AdminAddr, off by default, loopback unless
//     AllowPublic): operators on this machine: net/http/pprof and
//     Prometheus /metrics.
//
// The source address is no credential anywhere (loopback included), and
// X-Forwarded-For / Forwarded headers are never read. Signed commands and
// signed envelopes carry their own proof, checked by the registry and the
// handover domain.
type listener int

const (
	publicListener listener = iota
	peerListener
	adminListener
)

func (l listener) String() string {
	return [...]string{"public", "peer", "admin"}[l]
}

// caller says who may call a procedure on a listener.
type caller uint8

const (
	nobody caller = iota // not served on this listener
	// anyone who reaches the listener; on the peer listener: any node with
	// a certificate of the network CA.
	anyone
	// signedIn: any person of this node.
	signedIn
	// clerk, admin: a person of this node with that role.
	clerk
	admin
	// console: a person with PUBLISHER or APPROVER; the handler checks
	// which one the mutations need (api_console.go).
	console
	// operatorAdmin: an ADMIN token issued by a node of the registry's
	// network operator (on the peer listener: presented by the calling
	// node on the admin's behalf, with its own certificate).
	operatorAdmin
	// clusterNode (peer listener): a server of this node's Raft
	// configuration, or a member node of this cluster (by its certificate's
	// node id, as gossip lists it): the nodes that may need a read index.
	clusterNode
	// withoutPeerListener (public listener): anyone, but only on a node
	// without TLS, where nodes call each other on the public listener
	// (development and tests); with TLS nodes use the peer listener.
	withoutPeerListener
)

func (c caller) String() string {
	return [...]string{"nobody", "anyone", "signed-in", "clerk", "admin", "console", "operator-admin", "cluster-node", "without-peer-listener"}[c]
}

// rule is one row of the policy: who may call, per listener.
type rule struct{ public, peer, admin caller }

func (r rule) on(l listener) caller {
	switch l {
	case publicListener:
		return r.public
	case peerListener:
		return r.peer
	default:
		return r.admin
	}
}

var (
	// open: the public API and node-to-node calls.
	open = rule{public: anyone, peer: anyone}
	// publicOnly: everyone on the public listener, never from a node.
	publicOnly = rule{public: anyone}
	// people: the named persons of this node, on the public listener only.
	clerks   = rule{public: clerk}
	admins   = rule{public: admin}
	anyUser  = rule{public: signedIn}
	console_ = rule{public: console}
	// clusterAdmin: the network operator's admins, directly or relayed by
	// a peer.
	clusterAdmin = rule{public: operatorAdmin, peer: operatorAdmin}
	// readIndex: the servers of the Raft configuration and the cluster's
	// members.
	readIndex = rule{public: withoutPeerListener, peer: clusterNode}
	// adminOnly: the admin listener.
	adminOnly = rule{admin: anyone}
)

func service(name string) string { return "/" + name + "/" }

// policy maps a service ("/pkg.Service/"), a procedure ("/pkg.Service/Method",
// which takes precedence over its service) or a page path to its rule.
var policy = map[string]rule{
	// Registry: signed commands authenticate themselves; forwarded writes
	// and the change feed arrive from peers.
	service(registryv1connect.PublishServiceName): open,
	service(registryv1connect.QueryServiceName):   open,
	service(registryv1connect.WatchServiceName):   open,

	// This node.
	nodev1connect.NodeServiceGetStatusProcedure:  open,
	nodev1connect.NodeServiceRotateKeysProcedure: admins,
	nodev1connect.NodeServiceRevokeKeyProcedure:  admins,

	// People: sign-in is open (rate-limited); user management is the
	// admins'; the console signs for the organisation.
	nodev1connect.AuthServiceSignInProcedure:  publicOnly,
	nodev1connect.AuthServiceWhoAmIProcedure:  anyUser,
	service(nodev1connect.AuthServiceName):    admins,
	service(nodev1connect.ConsoleServiceName): console_,

	// The cluster.
	nodev1connect.ClusterServiceReadIndexProcedure:          readIndex,
	nodev1connect.ClusterServiceListMembersProcedure:        open,
	nodev1connect.ClusterServiceTransferLeadershipProcedure: clusterAdmin,
	nodev1connect.ClusterServiceRotateGossipKeyProcedure:    clusterAdmin,

	// Handovers: other nodes deliver and read timelines (authenticated by
	// the signatures in their tokens); everything else is the
	// organisation's case-worker API, which makes this node sign.
	federationv1connect.HandoverServiceDeliverHandoverProcedure: open,
	federationv1connect.HandoverServiceDeliverEventProcedure:    open,
	federationv1connect.HandoverServiceGetCaseTimelineProcedure: open,
	// The citizen's tracking page: the code is the secret; a node asks
	// others only for a code it holds itself, and the page limits guesses
	// per address (node/web) besides the query budget.
	federationv1connect.HandoverServiceTrackCaseProcedure:        publicOnly,
	federationv1connect.HandoverServiceGetHandoverStatsProcedure: open, // counts only, no case data
	service(federationv1connect.HandoverServiceName):             clerks,

	// Standard tools (grpcurl, grpc-health-probe, buf curl).
	service(grpchealth.HealthV1ServiceName):        open,
	service(grpcreflect.ReflectV1ServiceName):      open,
	service(grpcreflect.ReflectV1AlphaServiceName): open,
	// The web pages (pages.go, node/web): "/" and the trees of
	// web.Prefixes, on the public listener. A page reads and writes only
	// through this API, as its visitor (their address, their session's
	// token), so every row above still decides.
	"/": publicOnly,

	// Load balancers' health checks (health.go; not rate-limited).
	"/healthz": open,
	"/readyz":  open,

	// Operations.
	"/debug/pprof/": adminOnly,
	"/metrics":      adminOnly,

	// Backups (backup.go): "verbund snapshot save [--handovers]".
	SnapshotPath:       admins,
	HandoverBackupPath: admins,
}

// ruleFor finds the rule for a request path: the procedure, else its
// service, else the pprof tree.
func ruleFor(path string) (rule, bool) {
	if r, ok := policy[path]; ok {
		return r, true
	}
	if i := strings.LastIndexByte(path, '/'); i > 0 {
		if r, ok := policy[path[:i+1]]; ok && strings.Count(path, "/") == 2 {
			return r, true
		}
	}
	if strings.HasPrefix(path, "/debug/pprof/") {
		return policy["/debug/pprof/"], true
	}
	if isPagePath(path) {
		return publicOnly, true
	}
	return rule{}, false
}

// Refusals: errUnauthenticated when the caller has no valid credential
// for what the rule needs, registry.ErrPermissionDenied when it has one
// but the rule does not let it through.
var (
	errNoRoute         = errors.New("no such route")
	errUnauthenticated = errors.New("unauthenticated")
)

// identify establishes who sent r on listener l. On the peer listener the
// calling node's verified certificate names it (no certificate:
// errUnauthenticated); a bearer token may ride along for an operator
// admin. On the public listener a bearer token or a client certificate
// registered to a user makes a person; nothing makes an anonymous caller.
// A credential that does not verify is an error, returned with what was
// established without it (anonymous, or the calling node).
func (n *Node) identify(l listener, r *http.Request) (auth.Identity, error) {
	id := auth.Identity{Addr: r.RemoteAddr}
	if l == adminListener {
		return id, nil
	}
	if l == peerListener {
		if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
			return id, fmt.Errorf("%w: the peer listener serves nodes with a certificate of the network CA only", errUnauthenticated)
		}
		nodeID, err := peertls.PeerNodeID(*r.TLS)
		if err != nil {
			return id, fmt.Errorf("%w: %v", errUnauthenticated, err)
		}
		id.Kind, id.Node = auth.PeerNode, nodeID
	}
	if tok, ok := bearer(r); ok {
		pid, err := n.verifyToken(r.Context(), tok)
		if err != nil {
			return id, fmt.Errorf("%w: %v", errUnauthenticated, err)
		}
		// On the peer listener a token rides along only when a node relays
		// cluster administration (TransferLeadership to the leader): the
		// rules there serve no person anything but operatorAdmin.
		if l == peerListener && !pid.HasRole(nodev1.Role_ROLE_ADMIN) {
			return id, fmt.Errorf("%w: on the peer listener only a network operator's admin token is accepted, relayed by a node", registry.ErrPermissionDenied)
		}
		pid.Addr = r.RemoteAddr
		return pid, nil
	}
	if l == publicListener && r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		sum := sha256.Sum256(r.TLS.PeerCertificates[0].Raw)
		u, err := n.users.ByCertificate(hex.EncodeToString(sum[:]))
		if err != nil {
			return id, fmt.Errorf("%w: client certificate: %v", errUnauthenticated, err)
		}
		if u.GetDisabled() {
			return id, fmt.Errorf("%w: user %s is disabled", errUnauthenticated, u.GetUsername())
		}
		return auth.Identity{Kind: auth.Person, Addr: r.RemoteAddr, User: u, Org: n.cfg.OrgID, Node: n.cfg.NodeID, Method: "certificate"}, nil
	}
	return id, nil
}

// bearer returns the token of an "Authorization: Bearer" header.
func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	if len(h) < 7 || !strings.EqualFold(h[:7], "bearer ") {
		return "", false
	}
	return strings.TrimSpace(h[7:]), true
}

// permit decides whether identity id may call a procedure whose rule on
// listener l is need.
func (n *Node) permit(l listener, need caller, id auth.Identity, path string) error {
	deny := func(format string, a ...any) error {
		return fmt.Errorf("%w: rule %s: %s %s", registry.ErrPermissionDenied, need, path, fmt.Sprintf(format, a...))
	}
	unauth := func(what string) error {
		return fmt.Errorf("%w: rule %s: %s needs %s; sign in (AuthService.SignIn) and send the token as \"Authorization: Bearer\"", errUnauthenticated, need, path, what)
	}
	person := id.Kind == auth.Person
	switch need {
	case nobody:
		return deny("is not served on the %s listener", l)
	case anyone:
		return nil
	case withoutPeerListener:
		if n.cfg.TLS == nil {
			return nil
		}
		return deny("is served to other nodes on the peer listener only")
	case signedIn:
		if !person {
			return unauth("a signed-in user of this node")
		}
		return nil
	case clerk, admin:
		role := nodev1.Role_ROLE_CLERK
		if need == admin {
			role = nodev1.Role_ROLE_ADMIN
		}
		if !person {
			return unauth("a user of this node with role " + roleName(role))
		}
		if !id.HasRole(role) {
			return deny("needs role %s; %s has %v", roleName(role), id.User.GetUsername(), auth.RoleNames(id.User.GetRoles()))
		}
		return nil
	case console:
		if !person {
			return unauth("a user of this node with role PUBLISHER or APPROVER")
		}
		if !id.HasRole(nodev1.Role_ROLE_PUBLISHER) && !id.HasRole(nodev1.Role_ROLE_APPROVER) {
			return deny("needs role PUBLISHER or APPROVER; %s has %v", id.User.GetUsername(), auth.RoleNames(id.User.GetRoles()))
		}
		return nil
	case operatorAdmin:
		if id.Kind != auth.OperatorAdmin && !person {
			return unauth("an ADMIN of the network operator")
		}
		op, err := n.reader.Operator()
		if err != nil {
			return deny("needs an ADMIN of the network operator, and no operator is registered: %v", err)
		}
		if id.Org != op || !id.HasRole(nodev1.Role_ROLE_ADMIN) {
			return deny("needs an ADMIN of the network operator %s; %s of %s has %v", op, id.User.GetUsername(), id.Org, auth.RoleNames(id.User.GetRoles()))
		}
		return nil
	case clusterNode:
		if id.Kind != auth.PeerNode {
			return unauth("a node of this cluster")
		}
		if !n.isServer() {
			return deny("is served by Raft servers only")
		}
		f := n.raft.GetConfiguration()
		if err := f.Error(); err != nil {
			return fmt.Errorf("%w: raft configuration: %v", registry.ErrUnavailable, err)
		}
		for _, s := range f.Configuration().Servers {
			if s.ID == raft.ServerID(id.Node) {
				return nil
			}
		}
		// A member (no Raft state) asks a server for linearizable reads:
		// its certificate names it, gossip says it is one of ours.
		if m, ok := n.memberByNodeID(id.Node); ok && m.Role == membership.RoleMember {
			return nil
		}
		return deny("is served to the servers of the Raft configuration and this cluster's members only; node %s is neither", id.Node)
	}
	return deny("unknown rule")
}

func roleName(r nodev1.Role) string { return strings.TrimPrefix(r.String(), "ROLE_") }

// guard applies the policy for listener l in front of h: it identifies the
// caller (identify), lets the rate limiter judge it, and checks the rule;
// a refused request gets Unauthenticated or PermissionDenied (in the
// protocol it spoke), a path the policy does not know 404. Requests let
// through carry the identity in their context (auth.FromContext) and, for
// a person, the actor the handover audit log records.
func (n *Node) guard(l listener, h http.Handler) http.Handler {
	ew := connect.NewErrorWriter()
	refuse := func(w http.ResponseWriter, r *http.Request, err error) {
		code := connect.CodePermissionDenied
		var ce *connect.Error
		switch {
		case errors.As(err, &ce):
			_ = ew.Write(w, r, ce)
			return
		case errors.Is(err, errUnauthenticated):
			code = connect.CodeUnauthenticated
		case errors.Is(err, registry.ErrUnavailable):
			code = connect.CodeUnavailable
		}
		_ = ew.Write(w, r, connect.NewError(code, err))
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ru, ok := ruleFor(r.URL.Path)
		if !ok {
			http.NotFound(w, r)
			return
		}
		need := ru.on(l)
		if need == nobody {
			refuse(w, r, n.permit(l, need, auth.Identity{}, r.URL.Path))
			return
		}
		// A credential that does not verify is refused where the rule
		// needs one; an open procedure serves the caller as what it is
		// without it (anonymous, or the calling node). The peer listener
		// never serves a caller without a node certificate.
		id, err := n.identify(l, r)
		if err != nil && (need != anyone && need != withoutPeerListener || l == peerListener && id.Kind == auth.Anonymous) {
			refuse(w, r, err)
			return
		}
		// Rate limits (ratelimit.go): per person or node once identified,
		// else per source address. A request it refuses is answered there.
		done, ok := n.limiter.Load().admit(l, id, w, r)
		if !ok {
			return
		}
		defer done()
		if err := n.permit(l, need, id, r.URL.Path); err != nil {
			refuse(w, r, err)
			return
		}
		ctx := auth.WithIdentity(r.Context(), id)
		if a := id.Actor(); a != "" {
			ctx = handover.WithActor(ctx, a)
		}
		h.ServeHTTP(w, r.WithContext(ctx))
	})
}
