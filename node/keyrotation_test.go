package node

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/verbund/verbund/federation/handover"

	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
	"github.com/verbund/verbund/registry"
)

func keyStatus(t *testing.T, n *Node, kid string) *registryv1.PublicKey {
	t.Helper()
	org, _, err := n.Reader().Organisation(n.Config().OrgID)
	if err != nil {
		t.Fatal(err)
	}
	for _, pk := range org.GetKeys() {
		if pk.GetKid() == kid {
			return pk
		}
	}
	t.Fatalf("key %s not in the registry", kid)
	return nil
}

// TestKeyRotationAndRevocation: rotation publishes new active keys, keeps
// the old signing key valid (retiring) so commands it signed still verify,
// survives a restart, and revocation stops the old key at once.
func TestKeyRotationAndRevocation(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir)
	n := startNode(t, cfg)
	ctx := context.Background()
	old := n.SigningKey()
	res, err := n.RotateKeys(ctx, time.Hour, false)
	if err != nil {
		t.Fatal(err)
	}
	if n.SigningKey().KeyID != res.GetSigningKid() || res.GetSigningKid() == old.KeyID {
		t.Fatalf("node signs with %s after rotation to %s", n.SigningKey().KeyID, res.GetSigningKid())
	}
	if pk := keyStatus(t, n, old.KeyID); pk.GetStatus() != registryv1.KeyStatus_KEY_STATUS_RETIRING || pk.GetNotAfterUnixMs() < time.Now().Add(50*time.Minute).UnixMilli() {
		t.Fatalf("old key after rotation: %v", pk)
	}
	if pk := keyStatus(t, n, res.GetSigningKid()); pk.GetStatus() != registryv1.KeyStatus_KEY_STATUS_ACTIVE {
		t.Fatalf("new key: %v", pk)
	}
	publish := func(jws string) *registryv1.CommandResult {
		rs, _, err := n.Publish(ctx, []string{jws})
		if err != nil {
			t.Fatal(err)
		}
		return rs[0]
	}
	// The retiring key still signs valid commands during its grace period.
	if r := publish(sign(t, old, "test-operator", offeringOrg("091620000077"))); r.GetErrorCode() != "" {
		t.Fatalf("command signed with the retiring key: %v", r)
	}
	// Restart: the node comes back with the new key; the old encryption key
	// is archived for envelopes sealed before the rotation.
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	cfg.RaftAddr = freeAddr(t)
	n = startNode(t, cfg)
	if n.SigningKey().KeyID != res.GetSigningKid() {
		t.Fatalf("after restart the node signs with %s, want %s", n.SigningKey().KeyID, res.GetSigningKid())
	}
	if _, err := os.Stat(filepath.Join(dir, "keys", "archive", res.GetPreviousKids()[1]+".jwk")); err != nil {
		t.Fatalf("old encryption key not archived: %v", err)
	}
	// Revocation stops the old key at once.
	if _, err := n.RevokeKey(ctx, old.KeyID); err != nil {
		t.Fatal(err)
	}
	if pk := keyStatus(t, n, old.KeyID); pk.GetStatus() != registryv1.KeyStatus_KEY_STATUS_REVOKED {
		t.Fatalf("revoked key: %v", pk)
	}
	if r := publish(sign(t, old, "test-operator", offeringOrg("091620000078"))); r.GetErrorCode() != registry.CodeUnknownKey {
		t.Fatalf("command signed with the revoked key: %v", r)
	}
	// The current key cannot be revoked without a replacement.
	if _, err := n.RevokeKey(ctx, n.SigningKey().KeyID); err == nil {
		t.Fatal("revoked the current signing key")
	}
}

func offeringOrg(id string) *registryv1.Mutation {
	return &registryv1.Mutation{Op: &registryv1.Mutation_PutOrganisation{PutOrganisation: &registryv1.Organisation{
		Id: id, Kind: registryv1.OrganisationKind_ORGANISATION_KIND_MUNICIPALITY, Name: "Gemeinde " + id,
	}}}
}

// TestRotationKeepsHandoverWiring: a rotation swaps the key ring the
// handover service reads its keys from; the service itself stays (no
// restart, no handler swap), signs with the new key and still opens
// envelopes sealed to the previous encryption key.
func TestRotationKeepsHandoverWiring(t *testing.T) {
	n := startNode(t, testConfig(t, t.TempDir()))
	svc := n.handover
	oldEnc := n.keys.current().enc.KeyID
	res, err := n.RotateKeys(context.Background(), time.Hour, false)
	if err != nil {
		t.Fatal(err)
	}
	if n.handover != svc {
		t.Fatal("rotation replaced the handover service")
	}
	var ks handover.KeySource = &n.keys
	if got := ks.SigningKey().KeyID; got != res.GetSigningKid() {
		t.Fatalf("handover signs with %s, want the new key %s", got, res.GetSigningKid())
	}
	dec := ks.DecryptionKeys()
	if len(dec) < 2 || dec[0].KeyID != res.GetEncryptionKid() || dec[1].KeyID != oldEnc {
		t.Fatalf("decryption keys %v, want the new %s then the old %s", kids(dec), res.GetEncryptionKid(), oldEnc)
	}
}

func kids(ks []jose.JSONWebKey) []string {
	var out []string
	for _, k := range ks {
		out = append(out, k.KeyID)
	}
	return out
}
