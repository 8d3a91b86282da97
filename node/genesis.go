package node

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/verbund/verbund/keys"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
	"github.com/verbund/verbund/registry"
)

// genesis registers this node's organisation as the network operator on an
// empty registry (the one command that is verified against a key carried in
// itself). It is idempotent, also when the node is restarted with the flags
// it was first started with while another node leads: a registry that has
// an operator (locally, or as the leader confirms) is left alone, and the
// registration is forwarded to whichever node leads. It returns once the
// cluster has a leader, so a genesis node's Start returns ready for writes.
func (n *Node) genesis(ctx context.Context) error {
	if err := n.waitLeader(ctx, 30*time.Second); err != nil {
		return err
	}
	if done, err := n.hasOperator(); err != nil || done {
		return err
	}
	lin := &registryv1.ReadOptions{Consistency: registryv1.Consistency_CONSISTENCY_LINEARIZABLE}
	if _, err := n.readBarrier(ctx, lin); err != nil {
		return fmt.Errorf("genesis: %w", err)
	}
	if done, err := n.hasOperator(); err != nil || done {
		return err
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

// hasOperator reports whether the local registry state has a network
// operator already.
func (n *Node) hasOperator() (bool, error) {
	op, err := n.reader.Operator()
	if err != nil || op == "" {
		return false, err
	}
	if op != n.cfg.OrgID {
		n.log.Info("registry already has an operator", "operator", op)
	}
	return true, nil
}

// waitLeader waits until the cluster has a leader this node knows of (itself
// on a fresh bootstrap).
func (n *Node) waitLeader(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		if addr, _ := n.raft.LeaderWithID(); addr != "" {
			return nil
		}
		select {
		case <-ctx.Done():
			return errors.New("no leader: the cluster elected no Raft leader in time (is a quorum of voters running?)")
		case <-t.C:
		}
	}
}
