package node

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"google.golang.org/protobuf/proto"

	"github.com/verbund/verbund/federation/handover"
	"github.com/verbund/verbund/keys"
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

// orgKeys is one generation of the organisation's private keys.
type orgKeys struct {
	sig, enc jose.JSONWebKey
	oldEnc   []jose.JSONWebKey // earlier encryption keys, newest first
}

// orgKeyring holds the current orgKeys, swapped atomically on rotation. It
// is the handover service's handover.KeySource.
type orgKeyring struct{ cur atomic.Pointer[orgKeys] }

var _ handover.KeySource = (*orgKeyring)(nil)

func (r *orgKeyring) current() *orgKeys { return r.cur.Load() }
func (r *orgKeyring) store(k *orgKeys)  { r.cur.Store(k) }

// SigningKey implements handover.KeySource.
func (r *orgKeyring) SigningKey() jose.JSONWebKey { return r.current().sig }

// DecryptionKeys implements handover.KeySource: the current encryption key,
// then the archived ones.
func (r *orgKeyring) DecryptionKeys() []jose.JSONWebKey {
	k := r.current()
	return append([]jose.JSONWebKey{k.enc}, k.oldEnc...)
}

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
	if err := n.checkDisk(); err != nil {
		return nil, err // the new keys are written here first
	}
	if grace <= 0 {
		grace = defaultKeyGrace
	}
	cur := n.keys.current()
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
	now := n.cfg.Clock()
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
	if kid == n.keys.SigningKey().KeyID {
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
	return n.publishOwn(ctx, cmd)
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
// to the archive and the key ring is swapped; the handover service signs
// with the new keys from its next call on (old encryption keys still
// decrypt).
func (n *Node) promotePendingKeys() error {
	nextSig, err := keys.Load(n.keyPath(signingFile + nextSuffix))
	if err != nil {
		return err
	}
	nextEnc, err := keys.Load(n.keyPath(encryptionFile + nextSuffix))
	if err != nil {
		return err
	}
	cur := n.keys.current()
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
	n.keys.store(&orgKeys{sig: nextSig, enc: nextEnc, oldEnc: append([]jose.JSONWebKey{cur.enc}, cur.oldEnc...)})
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
