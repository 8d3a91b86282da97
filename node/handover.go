package node

import (
	"context"
	"errors"
	"fmt"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/verbund/verbund/federation/envelope"
	"github.com/verbund/verbund/federation/handover"
	"github.com/verbund/verbund/keys"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
	"github.com/verbund/verbund/registry"
)

// startHandover opens the handover store (its own badger, synced on every
// commit: unlike the registry, nothing else holds a durable copy) and starts
// the service that sends, receives and tracks cases. The service asks the
// node's key ring for keys each time, so key rotation changes no wiring.
func (n *Node) startHandover(ctx context.Context) error {
	if err := n.prepareStore(formatHandover, n.cfg.path("handover")); err != nil {
		return err
	}
	db, err := handover.OpenDB(n.cfg.path("handover"), n.log)
	if err != nil {
		return fmt.Errorf("handover store: %w", err)
	}
	n.hoDB = db
	rk := handover.RegistryKeys{Self: n.cfg.OrgID, Lookup: func(_ context.Context, id string) (*registryv1.Organisation, uint64, error) {
		return n.reader.Organisation(id)
	}}
	var liveness handover.Liveness
	if n.gossip != nil {
		liveness = handover.GossipLiveness{Members: n.gossip.Members}
	}
	var space handover.SpaceGuard
	if n.disk != nil {
		space = n.disk // refuses sends, case steps and new deliveries on a full disk
	}
	svc, err := handover.New(handover.Config{
		OrgID:         n.cfg.OrgID,
		Keys:          &n.keys,
		DB:            n.hoDB,
		Resolver:      governedKeys{rk},
		Directory:     rk,
		Liveness:      liveness,
		Space:         space,
		Dialer:        n.peers,
		Audit:         auditPublisher{n: n},
		AuditHeads:    registryAuditHeads{r: n.reader},
		Logger:        n.log,
		AuditInterval: n.cfg.AuditInterval,
		Now:           n.cfg.Clock,
	})
	if err != nil {
		return err
	}
	n.handover = svc
	n.wg.Add(1)
	go func() { defer n.wg.Done(); svc.Run(ctx) }()
	return nil
}

// auditPublisher signs the audit chain head as this organisation and
// publishes it (forwarded to the leader from any node).
type auditPublisher struct{ n *Node }

func (a auditPublisher) PublishAuditHead(ctx context.Context, seq uint64, hash string) error {
	cmd := registry.NewCommand(a.n.cfg.OrgID, &registryv1.Mutation{Op: &registryv1.Mutation_PutAuditHead{PutAuditHead: &registryv1.AuditHead{
		OrganisationId: a.n.cfg.OrgID, Sequence: seq, Hash: hash, AtUnixMs: a.n.cfg.Clock().UnixMilli(),
	}}})
	_, err := a.n.publishOwn(ctx, cmd)
	return err
}

// registryAuditHeads reads published audit heads from the local registry.
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

// HandoverService is the node's handover service (nil before Start).
func (n *Node) HandoverService() *handover.Service { return n.handover }

// governedKeys is the handover service's key resolver: the registry's keys
// (handover.RegistryKeys) plus the governance rule that an organisation
// that is not ACTIVE (suspended, revoked, never approved: keys.InactiveAt
// now) neither receives nor sends handovers. Sealing is how every handover
// and case event leaves this node, so a recipient that is not active, or
// this node's own organisation when it is not, is refused there, before
// anything is stored, with envelope.ErrKeyInactive naming the status.
// (Deliveries from an organisation that is not active are refused by the
// receiving node's key rule.)
type governedKeys struct{ handover.RegistryKeys }

// EncryptionKey implements envelope.KeyResolver.
func (g governedKeys) EncryptionKey(ctx context.Context, org string) (jose.JSONWebKey, error) {
	if o, _, err := g.Lookup(ctx, org); err == nil && keys.InactiveAt(o, keys.Moment{}) {
		return jose.JSONWebKey{}, fmt.Errorf("%w: organisation %s is %s: handovers to it are refused", envelope.ErrKeyInactive, org, o.GetStatus())
	}
	if self, _, err := g.Lookup(ctx, g.Self); err == nil && keys.InactiveAt(self, keys.Moment{}) {
		return jose.JSONWebKey{}, fmt.Errorf("%w: this node's organisation %s is %s: its handovers are refused", envelope.ErrKeyInactive, g.Self, self.GetStatus())
	}
	return g.RegistryKeys.EncryptionKey(ctx, org)
}
