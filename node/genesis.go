package node

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/hashicorp/raft"

	"github.com/verbund/verbund/keys"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
	"github.com/verbund/verbund/registry"
)

// genesis registers this node's organisation as the network operator on an
// empty registry (the one command that is verified against a key carried in
// itself), with its signing and encryption keys and the public half of its
// offline recovery key (EnsureRecoveryKey), which alone may re-bind the
// operator to new keys after a loss (KeyRecovery signed with it). It is idempotent, also when the node is restarted with the flags
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
	rec, offline, created, err := EnsureRecoveryKey(n.cfg.DataDir, n.cfg.OrgID)
	if err != nil {
		return fmt.Errorf("genesis: %w", err)
	}
	if created {
		n.log.Warn("genesis: generated the network operator's offline recovery key: move this file to offline storage now and delete it here; it is the only way to recover the operator's signing key",
			"file", offline, "kid", rec.GetKid())
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
		Keys:        []*registryv1.PublicKey{pub, encPub, rec},
		Status:      registryv1.OrganisationStatus_ORGANISATION_STATUS_ACTIVE,
	}}})
	if _, err := n.publishOwn(ctx, cmd); err != nil {
		return fmt.Errorf("genesis: %w", err)
	}
	n.log.Info("genesis: registered network operator", "org", n.cfg.OrgID, "kid", ks.sig.KeyID)
	return nil
}

// startGenesis runs genesis for a node started with Genesis. On a fresh
// data dir (or a resumed one-voter cluster, which elects itself) it runs
// genesis before Start returns, as before. On a data dir that already holds
// Raft state of a cluster with other voters, the node rejoins its
// configuration: bootstrap and genesis are what it did once, not conditions
// of this start, so Start does not wait for a leader (which needs a quorum
// of voters that may be starting at the same moment). If the local registry
// has no operator yet (the node stopped between bootstrap and genesis),
// genesis runs in the background on runCtx until it succeeds.
func (n *Node) startGenesis(ctx, runCtx context.Context) error {
	if !n.resumed || n.SoleVoter() {
		return n.genesis(ctx)
	}
	if done, err := n.hasOperator(); err != nil || done {
		if done {
			n.log.Info("genesis: resumed an existing network; the operator is registered")
		}
		return err
	}
	n.log.Info("genesis: resumed Raft state without an operator; registering it once a leader is known")
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		for delay := time.Second; ; delay = min(2*delay, 30*time.Second) {
			err := n.genesis(runCtx)
			if err == nil || runCtx.Err() != nil {
				return
			}
			n.log.Warn("genesis: will retry", "err", err, "in", delay)
			select {
			case <-runCtx.Done():
				return
			case <-time.After(delay):
			}
		}
	}()
	return nil
}

// Resumed reports whether the node started from a data dir that already
// held Raft state (a restart, not a first start). Only meaningful after
// Start; always false on a member.
func (n *Node) Resumed() bool { return n.resumed }

// SoleVoter reports whether this node is the only voter of its Raft
// configuration (a one-node network, which elects itself on a restart).
func (n *Node) SoleVoter() bool {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return false
	}
	voters := 0
	self := false
	for _, s := range f.Configuration().Servers {
		if s.Suffrage == raft.Voter {
			voters++
			self = self || string(s.ID) == n.cfg.NodeID
		}
	}
	return voters == 1 && self
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

// The network operator's recovery key. The node keeps only its public half;
// the private half is written once, outside the keys directory, for the
// operator to move to offline storage (see the README, "Bootstrap").
const (
	// RecoveryPublicFile (in DATA_DIR/keys) is the public JWK of the
	// recovery key that goes into the genesis record.
	RecoveryPublicFile = "recovery.pub.jwk"
	// RecoveryOfflineFile (in DATA_DIR) is the private recovery key as
	// generated: move it offline.
	RecoveryOfflineFile = "OFFLINE-recovery-key.jwk"
)

// EnsureRecoveryKey returns the public half of the operator's recovery key
// kept in dataDir/keys/recovery.pub.jwk. If there is none it generates a
// pair: the private half goes to dataDir/OFFLINE-recovery-key.jwk (mode
// 0600), the returned offline path, and created is true; the caller must
// tell the operator to move that file offline. "verbund init" calls it for
// a network operator; a genesis node calls it before registering the
// operator, so a network always starts with a recovery key.
func EnsureRecoveryKey(dataDir, orgID string) (pub *registryv1.PublicKey, offline string, created bool, err error) {
	pubPath := filepath.Join(dataDir, "keys", RecoveryPublicFile)
	offline = filepath.Join(dataDir, RecoveryOfflineFile)
	if b, err := os.ReadFile(pubPath); err == nil {
		var k jose.JSONWebKey
		if err := k.UnmarshalJSON(b); err != nil {
			return nil, offline, false, fmt.Errorf("recovery key %s: %w", pubPath, err)
		}
		if !k.IsPublic() || k.Use != keys.UseRec {
			return nil, offline, false, fmt.Errorf("recovery key %s: want a public JWK with use %q", pubPath, keys.UseRec)
		}
		pub, err := keys.Published(k)
		return pub, offline, false, err
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, offline, false, fmt.Errorf("recovery key: %w", err)
	}
	k, err := keys.GenerateRecovery(keys.NewKID(orgID + "-rec"))
	if err != nil {
		return nil, offline, false, err
	}
	if err := keys.Save(offline, k); err != nil {
		return nil, offline, false, err
	}
	pk := k.Public()
	b, err := pk.MarshalJSON()
	if err != nil {
		return nil, offline, false, fmt.Errorf("recovery key: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(pubPath), 0o700); err != nil {
		return nil, offline, false, fmt.Errorf("recovery key: %w", err)
	}
	if err := os.WriteFile(pubPath, b, 0o644); err != nil {
		return nil, offline, false, fmt.Errorf("recovery key: %w", err)
	}
	pub, err = keys.Published(k)
	return pub, offline, true, err
}
