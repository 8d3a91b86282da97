package node

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"connectrpc.com/connect"
	jose "github.com/go-jose/go-jose/v4"
	"google.golang.org/protobuf/proto"

	"github.com/verbund/verbund/federation/handover"
	"github.com/verbund/verbund/keys"
	"github.com/verbund/verbund/proto/gen/verbund/federation/v1/federationv1connect"
	nodev1 "github.com/verbund/verbund/proto/gen/verbund/node/v1"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
	"github.com/verbund/verbund/registry"
)

// Key files in DATA_DIR/keys: signing.jwk and encryption.jwk are current;
// *.next.jwk are a rotation in progress (written before it is published);
// archive/<kid>.jwk are earlier keys (old encryption keys still decrypt
// envelopes sealed before a rotation).
const (
	signingFile     = "signing.jwk"
	encryptionFile  = "encryption.jwk"
	nextSuffix      = ".next"
	defaultKeyGrace = 7 * 24 * time.Hour
)

// orgKeys is the node's current key set, swapped atomically on rotation.
type orgKeys struct {
	sig, enc jose.JSONWebKey
	oldEnc   []jose.JSONWebKey
}

func (n *Node) keys() *orgKeys { return n.keyset.Load() }

func (n *Node) keyPath(parts ...string) string {
	return n.cfg.path(append([]string{"keys"}, parts...)...)
}

// loadArchivedEncKeys reads earlier encryption keys from the archive.
func (n *Node) loadArchivedEncKeys() ([]jose.JSONWebKey, error) {
	files, err := filepath.Glob(n.keyPath("archive", "*.jwk"))
	if err != nil {
		return nil, err
	}
	var out []jose.JSONWebKey
	for _, f := range files {
		k, err := keys.Load(f)
		if err != nil {
			return nil, err
		}
		if k.Use == keys.UseEnc {
			out = append(out, k)
		}
	}
	return out, nil
}

// RotateKeys replaces the organisation's keys; see NodeService.RotateKeys.
// The new keys are on disk (as pending) before the registry learns them, and
// the node switches only after the registry accepted them, so a crash at any
// point leaves a key the registry knows.
func (n *Node) RotateKeys(ctx context.Context, grace time.Duration, revokePrevious bool) (*nodev1.RotateKeysResponse, error) {
	n.rotateMu.Lock()
	defer n.rotateMu.Unlock()
	if grace <= 0 {
		grace = defaultKeyGrace
	}
	cur := n.keys()
	newSig, err := keys.GenerateSigning(keys.NewKID(n.cfg.OrgID + "-sig"))
	if err != nil {
		return nil, err
	}
	newEnc, err := keys.GenerateEncryption(keys.NewKID(n.cfg.OrgID + "-enc"))
	if err != nil {
		return nil, err
	}
	if err := keys.Save(n.keyPath(signingFile+nextSuffix), newSig); err != nil {
		return nil, err
	}
	if err := keys.Save(n.keyPath(encryptionFile+nextSuffix), newEnc); err != nil {
		return nil, err
	}
	now := time.Now()
	prev := []string{cur.sig.KeyID, cur.enc.KeyID}
	idx, err := n.updateOwnKeys(ctx, func(pks []*registryv1.PublicKey) ([]*registryv1.PublicKey, error) {
		for _, pk := range pks {
			if !slices.Contains(prev, pk.GetKid()) {
				continue
			}
			if revokePrevious {
				pk.Status = registryv1.KeyStatus_KEY_STATUS_REVOKED
			} else if pk.GetStatus() == registryv1.KeyStatus_KEY_STATUS_ACTIVE {
				pk.Status, pk.NotAfterUnixMs = registryv1.KeyStatus_KEY_STATUS_RETIRING, now.Add(grace).UnixMilli()
			}
		}
		for _, k := range []jose.JSONWebKey{newSig, newEnc} {
			pk, err := keys.Published(k)
			if err != nil {
				return nil, err
			}
			pks = append(pks, pk)
		}
		return pruneKeys(pks, now), nil
	})
	if err != nil {
		return nil, fmt.Errorf("publish new keys: %w", err)
	}
	if err := n.promotePendingKeys(); err != nil {
		return nil, err
	}
	n.log.Info("organisation keys rotated", "signing", newSig.KeyID, "encryption", newEnc.KeyID, "previous", prev, "revoked", revokePrevious, "index", idx)
	return &nodev1.RotateKeysResponse{SigningKid: newSig.KeyID, EncryptionKid: newEnc.KeyID, PreviousKids: prev, Index: idx}, nil
}

// RevokeKey marks kid revoked in the organisation's record.
func (n *Node) RevokeKey(ctx context.Context, kid string) (uint64, error) {
	n.rotateMu.Lock()
	defer n.rotateMu.Unlock()
	if kid == n.keys().sig.KeyID {
		return 0, fmt.Errorf("%w: %s is the node's current signing key; rotate with revoke_previous instead", registry.ErrInvalidArgument, kid)
	}
	return n.updateOwnKeys(ctx, func(pks []*registryv1.PublicKey) ([]*registryv1.PublicKey, error) {
		for _, pk := range pks {
			if pk.GetKid() == kid {
				pk.Status = registryv1.KeyStatus_KEY_STATUS_REVOKED
				return pks, nil
			}
		}
		return nil, fmt.Errorf("%w: %s is not a key of %s", registry.ErrNotFound, kid, n.cfg.OrgID)
	})
}

// updateOwnKeys reads the organisation's record linearizably, changes its
// keys and publishes it signed with the current key, conditional on the
// revision read (so a concurrent change is never overwritten).
func (n *Node) updateOwnKeys(ctx context.Context, change func([]*registryv1.PublicKey) ([]*registryv1.PublicKey, error)) (uint64, error) {
	if _, err := n.readBarrier(ctx, &registryv1.ReadOptions{Consistency: registryv1.Consistency_CONSISTENCY_LINEARIZABLE}); err != nil {
		return 0, err
	}
	org, _, err := n.reader.Organisation(n.cfg.OrgID)
	if err != nil {
		return 0, fmt.Errorf("organisation %s must be onboarded first: %w", n.cfg.OrgID, err)
	}
	rec := proto.Clone(org).(*registryv1.Organisation)
	if rec.Keys, err = change(rec.GetKeys()); err != nil {
		return 0, err
	}
	rev := rec.GetRevision()
	rec.Revision, rec.UpdatedAtUnixMs, rec.UpdatedBy = 0, 0, ""
	cmd := registry.NewCommand(n.cfg.OrgID, &registryv1.Mutation{
		Op:           &registryv1.Mutation_PutOrganisation{PutOrganisation: rec},
		Precondition: &registryv1.Precondition{Condition: &registryv1.Precondition_Revision{Revision: rev}},
	})
	return n.publishSigned(ctx, cmd, n.keys().sig)
}

// pruneKeys keeps the record within registry.MaxKeys by dropping revoked
// keys first, then the retiring keys whose grace ended longest ago.
func pruneKeys(pks []*registryv1.PublicKey, now time.Time) []*registryv1.PublicKey {
	for len(pks) > registry.MaxKeys {
		drop := -1
		for i, pk := range pks {
			switch {
			case pk.GetStatus() == registryv1.KeyStatus_KEY_STATUS_REVOKED:
				drop = i
			case drop < 0 && pk.GetStatus() == registryv1.KeyStatus_KEY_STATUS_RETIRING && pk.GetNotAfterUnixMs() < now.UnixMilli():
				drop = i
			}
			if drop >= 0 && pks[drop].GetStatus() == registryv1.KeyStatus_KEY_STATUS_REVOKED {
				break
			}
		}
		if drop < 0 {
			break
		}
		pks = slices.Delete(pks, drop, drop+1)
	}
	return pks
}

// promotePendingKeys makes the pending keys current: the previous ones go
// to the archive, the in-memory key set is swapped, and the handover
// service restarts with the new keys (old encryption keys still decrypt).
func (n *Node) promotePendingKeys() error {
	nextSig, err := keys.Load(n.keyPath(signingFile + nextSuffix))
	if err != nil {
		return err
	}
	nextEnc, err := keys.Load(n.keyPath(encryptionFile + nextSuffix))
	if err != nil {
		return err
	}
	cur := n.keys()
	for _, k := range []jose.JSONWebKey{cur.sig, cur.enc} {
		if err := keys.Save(n.keyPath("archive", k.KeyID+".jwk"), k); err != nil {
			return err
		}
	}
	for _, f := range []string{signingFile, encryptionFile} {
		if err := os.Rename(n.keyPath(f+nextSuffix), n.keyPath(f)); err != nil {
			return fmt.Errorf("promote %s: %w", f, err)
		}
	}
	n.keyset.Store(&orgKeys{sig: nextSig, enc: nextEnc, oldEnc: append([]jose.JSONWebKey{cur.enc}, cur.oldEnc...)})
	if n.handover != nil {
		return n.restartHandover()
	}
	return nil
}

// resolvePendingKeys finishes a rotation interrupted by a crash: pending
// keys the registry already lists become current; otherwise they were
// never published and are discarded.
func (n *Node) resolvePendingKeys(ctx context.Context) {
	pending, err := keys.Load(n.keyPath(signingFile + nextSuffix))
	if err != nil {
		return
	}
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if org, _, err := n.reader.Organisation(n.cfg.OrgID); err == nil {
			for _, pk := range org.GetKeys() {
				if pk.GetKid() == pending.KeyID {
					n.rotateMu.Lock()
					err := n.promotePendingKeys()
					n.rotateMu.Unlock()
					n.log.Info("finished an interrupted key rotation", "signing", pending.KeyID, "err", err)
					return
				}
			}
		}
		sleep(ctx, time.Second)
	}
	n.log.Warn("pending keys are not in the registry; discarding the unfinished rotation", "kid", pending.KeyID)
	_ = os.Remove(n.keyPath(signingFile + nextSuffix))
	_ = os.Remove(n.keyPath(encryptionFile + nextSuffix))
}

// handoverConfig is the handover service configuration for the current keys.
func (n *Node) handoverConfig() handover.Config {
	ks := n.keys()
	rk := handover.RegistryKeys{Self: n.cfg.OrgID, Lookup: func(_ context.Context, id string) (*registryv1.Organisation, uint64, error) {
		return n.reader.Organisation(id)
	}}
	var liveness handover.Liveness
	if n.gossip != nil {
		liveness = handover.GossipLiveness{Members: n.gossip.Members}
	}
	return handover.Config{
		OrgID: n.cfg.OrgID, SigningKey: ks.sig, EncryptionKey: ks.enc, OldEncryptionKeys: ks.oldEnc,
		DB: n.hoDB, Resolver: rk, Directory: rk, Liveness: liveness,
		Dialer:        &handoverDialer{hc: n.peers.hc, m: map[string]federationv1connect.HandoverServiceClient{}},
		Audit:         auditPublisher{n: n},
		AuditHeads:    registryAuditHeads{r: n.reader},
		Logger:        n.log.With("component", "handover"),
		AuditInterval: n.cfg.AuditInterval,
	}
}

// restartHandover replaces the running handover service with one using the
// current keys; its durable state carries over in the same DB.
func (n *Node) restartHandover() error {
	if err := n.handover.Close(); err != nil {
		return err
	}
	return n.runHandover(n.runCtx)
}

// apiServer endpoints.

func (a *apiServer) RotateKeys(ctx context.Context, req *connect.Request[nodev1.RotateKeysRequest]) (*connect.Response[nodev1.RotateKeysResponse], error) {
	if err := checkAdmin(ctx, req.Peer()); err != nil {
		return nil, err
	}
	if v, _ := ctx.Value(peerKey{}).(bool); v {
		return nil, fmt.Errorf("%w: key rotation only from this machine", registry.ErrPermissionDenied)
	}
	res, err := a.n.RotateKeys(ctx, time.Duration(req.Msg.GetGraceSeconds())*time.Second, req.Msg.GetRevokePrevious())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(res), nil
}

func (a *apiServer) RevokeKey(ctx context.Context, req *connect.Request[nodev1.RevokeKeyRequest]) (*connect.Response[nodev1.RevokeKeyResponse], error) {
	if err := checkAdmin(ctx, req.Peer()); err != nil {
		return nil, err
	}
	if v, _ := ctx.Value(peerKey{}).(bool); v {
		return nil, fmt.Errorf("%w: key revocation only from this machine", registry.ErrPermissionDenied)
	}
	idx, err := a.n.RevokeKey(ctx, req.Msg.GetKid())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&nodev1.RevokeKeyResponse{Index: idx}), nil
}
