package handover

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/verbund/verbund/federation/envelope"
	"github.com/verbund/verbund/federation/membership"
	"github.com/verbund/verbund/keys"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
)

func TestRegistryKeys(t *testing.T) {
	ctx := context.Background()
	now := time.Now()
	mk := func(kid string, enc bool, st registryv1.KeyStatus, notAfter time.Time) *registryv1.PublicKey {
		k := sigKey(kid)
		if enc {
			k = encKey(t, kid)
		}
		p, err := keys.Published(k)
		if err != nil {
			t.Fatal(err)
		}
		p.Status = st
		if !notAfter.IsZero() {
			p.NotAfterUnixMs = notAfter.UnixMilli()
		}
		return p
	}
	org := &registryv1.Organisation{Id: orgA, ApiEndpoint: "https://a.example", Keys: []*registryv1.PublicKey{
		mk("a-sig-new", false, registryv1.KeyStatus_KEY_STATUS_ACTIVE, time.Time{}),
		mk("a-sig-old", false, registryv1.KeyStatus_KEY_STATUS_RETIRING, now),
		mk("a-sig-bad", false, registryv1.KeyStatus_KEY_STATUS_REVOKED, time.Time{}),
		mk("a-enc-old", true, registryv1.KeyStatus_KEY_STATUS_RETIRING, now.Add(time.Hour)),
		mk("a-enc-new", true, registryv1.KeyStatus_KEY_STATUS_ACTIVE, time.Time{}),
	}}
	r := RegistryKeys{Self: orgA, Lookup: func(_ context.Context, id string) (*registryv1.Organisation, uint64, error) {
		if id == orgA {
			return org, 7, nil
		}
		return nil, 7, errors.New("not found")
	}}
	for _, tc := range []struct {
		org, kid string
		at       time.Time
		want     error
	}{
		{orgA, "a-sig-new", now, nil},
		{orgA, "a-sig-old", now.Add(-time.Minute), nil},
		{orgA, "a-sig-old", now.Add(time.Minute), envelope.ErrKeyInactive},
		{orgA, "a-sig-bad", now, envelope.ErrRevokedKey},
		{orgA, "a-enc-new", now, envelope.ErrUnknownKey},
		{orgA, "nope", now, envelope.ErrUnknownKey},
		{orgB, "a-sig-new", now, envelope.ErrUnknownKey},
	} {
		k, err := r.VerificationKey(ctx, tc.org, tc.kid, keys.Now(tc.at))
		if tc.want == nil && (err != nil || k.KeyID != tc.kid || !k.IsPublic()) {
			t.Errorf("%s/%s: %v", tc.org, tc.kid, err)
		}
		if tc.want != nil && !errors.Is(err, tc.want) {
			t.Errorf("%s/%s at %v: got %v, want %v", tc.org, tc.kid, tc.at, err, tc.want)
		}
	}
	if k, err := r.EncryptionKey(ctx, orgA); err != nil || k.KeyID != "a-enc-new" {
		t.Errorf("encryption key: %v %v", k.KeyID, err)
	}
	if p, err := r.Position(ctx); err != nil || p != 7 {
		t.Errorf("position: %d %v", p, err)
	}
	if e, err := r.Endpoint(ctx, orgA); err != nil || e != "https://a.example" {
		t.Errorf("endpoint: %q %v", e, err)
	}

	var members []membership.Member
	g := GossipLiveness{Members: func() []membership.Member { return members }}
	if !g.Alive(orgA) {
		t.Error("unknown organisation must count as alive")
	}
	members = []membership.Member{{Meta: membership.Meta{OrgID: orgA}, State: membership.StateDead}}
	if g.Alive(orgA) {
		t.Error("dead organisation alive")
	}
	members = append(members, membership.Member{Meta: membership.Meta{OrgID: orgA}, State: membership.StateSuspect})
	if !g.Alive(orgA) {
		t.Error("suspect node must count as alive")
	}
}
