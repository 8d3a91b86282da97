package node

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/hashicorp/raft"

	"github.com/verbund/verbund/federation/envelope"
	"github.com/verbund/verbund/federation/handover"
	"github.com/verbund/verbund/federation/membership"
	"github.com/verbund/verbund/keys"
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
	hc := n.peers.hc
	svc, err := handover.New(handover.Config{
		OrgID:         n.cfg.OrgID,
		SigningKey:    n.signingKey,
		EncryptionKey: n.encKey,
		DB:            db,
		Resolver:      registryKeys{r: n.reader},
		Directory:     registryDirectory{r: n.reader},
		Liveness:      gossipLiveness{n: n},
		Dialer:        &handoverDialer{hc: hc, m: map[string]federationv1connect.HandoverServiceClient{}},
		Audit:         auditPublisher{n: n},
		AuditHeads:    registryAuditHeads{r: n.reader},
		Logger:        n.log.With("component", "handover"),
		AuditInterval: n.cfg.AuditInterval,
	})
	if err != nil {
		return err
	}
	n.handover = svc
	n.wg.Add(1)
	go func() { defer n.wg.Done(); svc.Run(ctx) }()
	return nil
}

// Handover exposes the handover service (tests).
func (n *Node) Handover() *handover.Service { return n.handover }

// registryKeys resolves JOSE keys from the replicated registry.
type registryKeys struct{ r *registry.Reader }

func (k registryKeys) lookup(org, kid, use string) (*registryv1.PublicKey, error) {
	o, _, err := k.r.Organisation(org)
	if err != nil {
		return nil, fmt.Errorf("%w: organisation %s: %v", envelope.ErrUnknownKey, org, err)
	}
	for _, pk := range o.GetKeys() {
		if pk.GetKid() == kid && pk.GetUse() == use {
			return pk, nil
		}
	}
	if owner, _ := k.r.KeyOwner(kid); owner != "" && owner != org {
		return nil, fmt.Errorf("%w: %s belongs to %s, not %s", envelope.ErrKeyNotOwned, kid, owner, org)
	}
	return nil, fmt.Errorf("%w: %s has no %s key %q", envelope.ErrUnknownKey, org, use, kid)
}

func (k registryKeys) VerificationKey(ctx context.Context, org, kid string, at time.Time) (jose.JSONWebKey, error) {
	pk, err := k.lookup(org, kid, keys.UseSig)
	if err != nil {
		return jose.JSONWebKey{}, err
	}
	switch pk.GetStatus() {
	case registryv1.KeyStatus_KEY_STATUS_ACTIVE:
	case registryv1.KeyStatus_KEY_STATUS_RETIRING:
		if at.UnixMilli() > pk.GetNotAfterUnixMs() {
			return jose.JSONWebKey{}, fmt.Errorf("%w: %s retired at %v", envelope.ErrKeyInactive, kid, time.UnixMilli(pk.GetNotAfterUnixMs()))
		}
	default:
		return jose.JSONWebKey{}, fmt.Errorf("%w: %s", envelope.ErrRevokedKey, kid)
	}
	return keys.ParsePublic(pk)
}

func (k registryKeys) EncryptionKey(ctx context.Context, org string) (jose.JSONWebKey, error) {
	o, _, err := k.r.Organisation(org)
	if err != nil {
		return jose.JSONWebKey{}, fmt.Errorf("%w: organisation %s: %v", envelope.ErrUnknownKey, org, err)
	}
	for _, pk := range o.GetKeys() {
		if pk.GetUse() == keys.UseEnc && pk.GetStatus() == registryv1.KeyStatus_KEY_STATUS_ACTIVE {
			return keys.ParsePublic(pk)
		}
	}
	return jose.JSONWebKey{}, fmt.Errorf("%w: %s has no active encryption key", envelope.ErrUnknownKey, org)
}

// registryDirectory finds an organisation's node from its registered
// api_endpoint.
type registryDirectory struct{ r *registry.Reader }

func (d registryDirectory) Endpoint(ctx context.Context, org string) (string, error) {
	o, _, err := d.r.Organisation(org)
	if err != nil {
		return "", err
	}
	if o.GetApiEndpoint() == "" {
		return "", fmt.Errorf("organisation %s has no node endpoint registered", org)
	}
	return o.GetApiEndpoint(), nil
}

// gossipLiveness pauses deliveries to organisations whose nodes gossip
// reports down. An organisation gossip does not know is tried anyway.
type gossipLiveness struct{ n *Node }

func (l gossipLiveness) Alive(org string) bool {
	if l.n.gossip == nil {
		return true
	}
	known := false
	for _, m := range l.n.gossip.Members() {
		if m.OrgID != org {
			continue
		}
		known = true
		if m.State == membership.StateAlive || m.State == membership.StateSuspect {
			return true
		}
	}
	return !known
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
	if err != nil {
		return 0, "", fmt.Errorf("%w: %v", handover.ErrNoAuditHead, err)
	}
	return head.GetSequence(), head.GetHash(), nil
}

// publishSelf signs cmd with this node's organisation key and publishes it
// from any role: proposed here on the leader, forwarded otherwise.
func (n *Node) publishSelf(ctx context.Context, cmd *registryv1.Command) error {
	jws, err := registry.SignCommand(cmd, n.signingKey)
	if err != nil {
		return err
	}
	var res []*registryv1.CommandResult
	if n.isServer() && n.raft.State() == raft.Leader {
		res, _, err = n.Publish(ctx, []string{jws})
	} else {
		res, _, err = n.forwardPublish(ctx, 0, []string{jws})
	}
	if err != nil {
		return err
	}
	if c := res[0].GetErrorCode(); c != "" {
		return registry.ErrorFromCode(c, res[0].GetErrorMessage())
	}
	return nil
}
