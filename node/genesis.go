package node

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"

	"github.com/verbund/verbund/keys"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
	"github.com/verbund/verbund/registry"
)

// genesis registers this node's organisation as the network operator on an
// empty registry (the one command that is verified against a key carried in
// itself). It is idempotent: a restart finds the operator.
func (n *Node) genesis(ctx context.Context) error {
	if err := n.waitLeader(ctx, 30*time.Second); err != nil {
		return err
	}
	op, err := n.reader.Operator()
	if err != nil {
		return err
	}
	if op != "" {
		if op != n.cfg.OrgID {
			n.log.Info("registry already has an operator", "operator", op)
		}
		return nil
	}
	ks := n.keys.current()
	pub, err := keys.Published(ks.sig)
	if err != nil {
		return err
	}
	encPub, err := keys.Published(ks.enc)
	if err != nil {
		return err
	}
	name := n.cfg.OrgName
	if name == "" {
		name = "Verbund network operator"
	}
	cmd := registry.NewCommand(n.cfg.OrgID, &registryv1.Mutation{Op: &registryv1.Mutation_PutOrganisation{PutOrganisation: &registryv1.Organisation{
		Id:          n.cfg.OrgID,
		Kind:        registryv1.OrganisationKind_ORGANISATION_KIND_NETWORK_OPERATOR,
		Name:        name,
		ApiEndpoint: n.PeerURL(),
		Keys:        []*registryv1.PublicKey{pub, encPub},
		Status:      registryv1.OrganisationStatus_ORGANISATION_STATUS_ACTIVE,
	}}})
	if _, err := n.publishOwn(ctx, cmd); err != nil {
		return fmt.Errorf("genesis: %w", err)
	}
	n.log.Info("genesis: registered network operator", "org", n.cfg.OrgID, "kid", ks.sig.KeyID)
	return nil
}

func (n *Node) waitLeader(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for n.raft.State() != raft.Leader {
		select {
		case <-ctx.Done():
			return errors.New("no leadership: this node did not become Raft leader in time")
		case <-t.C:
		}
	}
	return nil
}
