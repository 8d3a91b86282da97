package node

import (
	"context"

	"errors"
	"fmt"
	jose "github.com/go-jose/go-jose/v4"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"connectrpc.com/connect"

	"github.com/verbund/verbund/federation/handover"
	"github.com/verbund/verbund/proto/gen/verbund/federation/v1/federationv1connect"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
	"github.com/verbund/verbund/registry"
)

// startHandover opens the handover store (its own badger, synced on every
// commit: unlike the registry, nothing else holds a durable copy) and the
// service that sends, receives and tracks cases.
func (n *Node) startHandover(ctx context.Context) error {
	db, err := handover.OpenDB(n.cfg.path("handover"), n.log)
	if err != nil {
		return fmt.Errorf("handover store: %w", err)
	}
	n.hoDB = db
	return n.runHandover(ctx)
}

// runHandover starts a handover service on the open store with the current
// keys and routes the handover API to it.
func (n *Node) runHandover(ctx context.Context) error {
	svc, err := handover.New(n.handoverConfig())
	if err != nil {
		return err
	}
	n.handover = svc
	n.hoHandler.Store(handlerOf(n.handoverHandler()))
	n.wg.Add(1)
	go func() { defer n.wg.Done(); svc.Run(ctx) }()
	return nil
}

// handoverHandler mounts the handover service. Other nodes may call only the
// peer procedures (deliver handover/event, case timeline: authenticated by
// the signatures they carry). The case-worker procedures (send, inbox,
// accept, ...) make this node sign on behalf of its organisation, so they
// are served only to callers on this machine, never over the peer listener.
func (n *Node) handoverHandler() (string, http.Handler) {
	staffOnly := connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			if p := req.Spec().Procedure; !handover.PeerProcedures[p] {
				fromPeer, _ := ctx.Value(peerKey{}).(bool)
				if fromPeer || !isLoopback(req.Peer().Addr) {
					return nil, connect.NewError(connect.CodePermissionDenied, fmt.Errorf("%s is served to case workers on this node only", p))
				}
			}
			return next(ctx, req)
		}
	})
	return n.handover.Handler(connect.WithInterceptors(staffOnly))
}

func handlerOf(_ string, h http.Handler) *http.Handler { return &h }

// handoverRoute serves the current handover service (it is replaced when
// the organisation's keys rotate).
func (n *Node) handoverRoute() (string, http.Handler) {
	path, _ := n.handover.Handler()
	return path, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		(*n.hoHandler.Load()).ServeHTTP(w, r)
	})
}

func isLoopback(addr string) bool {
	ap, err := netip.ParseAddrPort(addr)
	return err == nil && ap.Addr().IsLoopback()
}

type handoverDialer struct {
	hc *http.Client
	mu sync.Mutex
	m  map[string]federationv1connect.HandoverServiceClient
}

func (d *handoverDialer) Client(endpoint string) federationv1connect.HandoverServiceClient {
	d.mu.Lock()
	defer d.mu.Unlock()
	c, ok := d.m[endpoint]
	if !ok {
		c = federationv1connect.NewHandoverServiceClient(d.hc, endpoint)
		d.m[endpoint] = c
	}
	return c
}

// auditPublisher signs the audit chain head as this organisation and
// publishes it (forwarded to the leader from any node).
type auditPublisher struct{ n *Node }

func (a auditPublisher) PublishAuditHead(ctx context.Context, seq uint64, hash string) error {
	cmd := registry.NewCommand(a.n.cfg.OrgID, &registryv1.Mutation{Op: &registryv1.Mutation_PutAuditHead{PutAuditHead: &registryv1.AuditHead{
		OrganisationId: a.n.cfg.OrgID, Sequence: seq, Hash: hash, AtUnixMs: time.Now().UnixMilli(),
	}}})
	return a.n.publishSelf(ctx, cmd)
}

type registryAuditHeads struct{ r *registry.Reader }

func (h registryAuditHeads) PublishedAuditHead(ctx context.Context, org string) (uint64, string, error) {
	head, _, err := h.r.AuditHead(org)
	if errors.Is(err, registry.ErrNotFound) {
		return 0, "", fmt.Errorf("%w: %v", handover.ErrNoAuditHead, err)
	}
	if err != nil {
		return 0, "", err
	}
	return head.GetSequence(), head.GetHash(), nil
}

// publishSelf signs cmd with this node's organisation key and publishes it.
func (n *Node) publishSelf(ctx context.Context, cmd *registryv1.Command) error {
	_, err := n.publishSigned(ctx, cmd, n.keys().sig)
	return err
}

// publishSigned signs cmd with key and publishes it from any role: proposed
// here on the leader, forwarded otherwise. It returns the commit index.
func (n *Node) publishSigned(ctx context.Context, cmd *registryv1.Command, key jose.JSONWebKey) (uint64, error) {
	jws, err := registry.SignCommand(cmd, key)
	if err != nil {
		return 0, err
	}
	res, idx, err := n.submit(ctx, 0, []string{jws})
	if err != nil {
		return 0, err
	}
	if c := res[0].GetErrorCode(); c != "" {
		return 0, registry.ErrorFromCode(c, res[0].GetErrorMessage())
	}
	return idx, nil
}
