package node

import (
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strings"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"

	"github.com/verbund/verbund/proto/gen/verbund/federation/v1/federationv1connect"
	"github.com/verbund/verbund/proto/gen/verbund/node/v1/nodev1connect"
	"github.com/verbund/verbund/proto/gen/verbund/registry/v1/registryv1connect"
	"github.com/verbund/verbund/registry"
)

// The node's access policy: the listeners it serves and, per procedure (or
// page), who may call it on which listener. Handlers do not check callers;
// a new RPC or page is unreachable until it has a row here.
//
// Listeners:
//
//   - public (Config.HTTPAddr): the API for everyone: queries, signed
//     Publish, status, health, reflection, the pages. Operator and
//     case-worker actions only from this machine (loopback).
//   - peer (Config.PeerAddr, with TLS): other nodes of the network, each
//     authenticated by a client certificate of the network's CA: forwarded
//     Publish, ReadIndex, the change feed, handover deliveries and case
//     timelines, cluster administration from a peer.
//   - admin (Config.AdminAddr, off by default, loopback unless
//     AllowPublic): operators on this machine: net/http/pprof and
//     Prometheus /metrics.
//
// Nothing here authenticates organisations: signed commands and signed
// envelopes carry their own proof, checked by the registry and the
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
	nobody    caller = iota // not served on this listener
	anyone                  // whoever reaches the listener (on peer: an authenticated node)
	localOnly               // callers on this machine only (loopback source address)
)

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
	// operator: cluster administration from this machine or from another
	// node of the network.
	operator = rule{public: localOnly, peer: anyone}
	// orgLocal: acts on behalf of this node's organisation (signs with its
	// keys): only from this machine, never from another node.
	orgLocal = rule{public: localOnly}
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
	nodev1connect.NodeServiceRotateKeysProcedure: orgLocal,
	nodev1connect.NodeServiceRevokeKeyProcedure:  orgLocal,

	// The cluster.
	nodev1connect.ClusterServiceReadIndexProcedure:          open,
	nodev1connect.ClusterServiceListMembersProcedure:        open,
	nodev1connect.ClusterServiceTransferLeadershipProcedure: operator,
	nodev1connect.ClusterServiceRotateGossipKeyProcedure:    operator,

	// Handovers: other nodes deliver and read timelines (authenticated by
	// the signatures in their tokens); everything else is the
	// organisation's case-worker API, which makes this node sign.
	federationv1connect.HandoverServiceDeliverHandoverProcedure: open,
	federationv1connect.HandoverServiceDeliverEventProcedure:    open,
	federationv1connect.HandoverServiceGetCaseTimelineProcedure: open,
	service(federationv1connect.HandoverServiceName):            orgLocal,

	// Standard tools (grpcurl, grpc-health-probe, buf curl).
	service(grpchealth.HealthV1ServiceName):        open,
	service(grpcreflect.ReflectV1ServiceName):      open,
	service(grpcreflect.ReflectV1AlphaServiceName): open,
	"/": open, // the index page

	// Operations.
	"/debug/pprof/": adminOnly,
	"/metrics":      adminOnly,
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
	return rule{}, false
}

// allowed decides whether r may reach its path on listener l.
func allowed(l listener, r *http.Request) error {
	ru, ok := ruleFor(r.URL.Path)
	if !ok {
		return errNoRoute
	}
	switch ru.on(l) {
	case anyone:
		if l == peerListener && (r.TLS == nil || len(r.TLS.VerifiedChains) == 0) {
			return fmt.Errorf("%w: the peer listener serves authenticated nodes only", registry.ErrPermissionDenied)
		}
		return nil
	case localOnly:
		if isLoopback(r.RemoteAddr) {
			return nil
		}
		return fmt.Errorf("%w: %s is served to callers on this machine only", registry.ErrPermissionDenied, r.URL.Path)
	}
	return fmt.Errorf("%w: %s is not served on the %s listener", registry.ErrPermissionDenied, r.URL.Path, l)
}

var errNoRoute = errors.New("no such route")

// guard applies the policy for listener l in front of h: a refused request
// gets PermissionDenied (in the protocol it spoke), a path the policy does
// not know 404.
func (n *Node) guard(l listener, h http.Handler) http.Handler {
	ew := connect.NewErrorWriter()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		done, ok := n.limiter.Load().admit(l, w, r) // ratelimit.go: before any other work
		if !ok {
			return
		}
		defer done()
		switch err := allowed(l, r); {
		case err == errNoRoute:
			http.NotFound(w, r)
		case err != nil:
			_ = ew.Write(w, r, connect.NewError(connect.CodePermissionDenied, err))
		default:
			h.ServeHTTP(w, r)
		}
	})
}

func isLoopback(addr string) bool {
	ap, err := netip.ParseAddrPort(addr)
	return err == nil && ap.Addr().IsLoopback()
}
