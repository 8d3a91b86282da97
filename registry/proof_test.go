package registry

import (
	"errors"
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"

	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
)

func TestVerifyProofOwnAreaFromReader(t *testing.T) {
	w := newWorld(t)
	w.addOffering(w.muni, leikaGewerbe, arsMuni)
	res, err := w.r.FindProvidersWithProof(leikaGewerbe, arsMuni, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Matches) != 1 {
		t.Fatalf("%d providers, want 1", len(res.Matches))
	}
	p := res.Matches[0]
	if p.GetProof().GetIndex() != res.ReadFrom || p.GetProof().GetOfferingCommand() == "" || p.GetProof().GetAuthorisation() != nil {
		t.Fatalf("proof %v at index %d", p.GetProof(), res.ReadFrom)
	}
	if err := VerifyProof(p, arsMuni); err != nil {
		t.Fatalf("VerifyProof: %v", err)
	}
	// The lean answer carries no proof.
	lean, err := w.r.FindProviders(leikaGewerbe, arsMuni, 10)
	if err != nil {
		t.Fatal(err)
	}
	if lean.Matches[0].GetProof() != nil {
		t.Fatal("FindProviders attached a proof")
	}
	// The proof names the command that made the offering's current
	// revision, also after a later put that changed nothing.
	w.mustApply(w.signed(w.muni, mPutOffering(offering(arsMuni, leikaGewerbe, arsMuni))))
	again, err := w.r.FindProvidersWithProof(leikaGewerbe, arsMuni, 10)
	if err != nil {
		t.Fatal(err)
	}
	if again.Matches[0].GetProof().GetOfferingCommand() != p.GetProof().GetOfferingCommand() {
		t.Fatal("a no-op put changed the offering's proof")
	}
	if err := VerifyProof(again.Matches[0], arsMuni); err != nil {
		t.Fatalf("VerifyProof after a no-op put: %v", err)
	}
}

// proofCase is a world with a shared service centre serving the second
// municipality under its authorisation, and the signed pieces of a valid
// proof built by hand (so that forged variants can be built too).
type proofCase struct {
	*world
	off   *registryv1.Offering
	auth  *registryv1.Authorisation
	rev   uint64 // revision stamped on the records: the current index
	index uint64
}

func newProofCase(t *testing.T) *proofCase {
	w := newWorld(t)
	c := &proofCase{world: w, index: w.index, rev: w.index<<RevisionBits | 1}
	c.off = offering(w.ssc.id(), leikaGewerbe, arsMuni2)
	c.off.Revision, c.off.UpdatedBy = c.rev, w.ssc.id()
	c.auth = &registryv1.Authorisation{
		Id: arsMuni2 + ":" + w.ssc.id() + ":1", GrantorId: arsMuni2, GranteeId: w.ssc.id(), Areas: []string{arsMuni2},
		Revision: c.rev, UpdatedBy: arsMuni2,
	}
	return c
}

func putAuth(a *registryv1.Authorisation) *registryv1.Mutation {
	return &registryv1.Mutation{Op: &registryv1.Mutation_PutAuthorisation{PutAuthorisation: a}}
}

// provider builds the provider with a proof of c's (possibly altered)
// offering and authorisation, signed by the given organisations.
func (c *proofCase) provider(t *testing.T, offSigner, authSigner *testOrg) *registryv1.Provider {
	t.Helper()
	offPut := proto.Clone(c.off).(*registryv1.Offering)
	clearOfferingProofMeta(offPut)
	p := &registryv1.Provider{
		Organisation: getOrg(t, c.r, c.ssc.id()), Offering: c.off, MatchedArea: arsMuni2,
		Proof: &registryv1.ProviderProof{
			OfferingCommand: signCmd(t, c.cmd(offSigner, mPutOffering(offPut)), offSigner.key),
			Index:           c.index,
			Signers:         []*registryv1.Organisation{getOrg(t, c.r, c.ssc.id())},
		},
	}
	if c.auth != nil {
		authPut := proto.Clone(c.auth).(*registryv1.Authorisation)
		clearAuthorisationProofMeta(authPut)
		p.Proof.Authorisation = c.auth
		p.Proof.AuthorisationCommand = signCmd(t, c.cmd(authSigner, putAuth(authPut)), authSigner.key)
		p.Proof.Signers = append(p.Proof.Signers, c.record(authSigner))
	}
	return p
}

// record returns o's registry record, or the test's record of an
// organisation the registry does not know (a forger's own).
func (c *proofCase) record(o *testOrg) *registryv1.Organisation {
	if rec, _, err := c.r.Organisation(o.id()); err == nil {
		return rec
	}
	return o.rec
}

func TestVerifyProof(t *testing.T) {
	tests := []struct {
		name string
		// build returns the provider to verify and the citizen's area.
		build func(t *testing.T, c *proofCase) (*registryv1.Provider, string)
		want  error
	}{
		{
			name: "valid delegated proof",
			build: func(t *testing.T, c *proofCase) (*registryv1.Provider, string) {
				return c.provider(t, c.ssc, c.muni2), arsMuni2
			},
		},
		{
			name: "valid without a citizen area",
			build: func(t *testing.T, c *proofCase) (*registryv1.Provider, string) {
				return c.provider(t, c.ssc, c.muni2), ""
			},
		},
		{
			name: "valid grant on behalf of a municipality by its state agency",
			build: func(t *testing.T, c *proofCase) (*registryv1.Provider, string) {
				c.auth.GrantorId, c.auth.OnBehalfOf, c.auth.UpdatedBy = c.state.id(), arsMuni2, c.state.id()
				p := c.provider(t, c.ssc, c.state)
				p.Proof.Signers = append(p.Proof.Signers, getOrg(t, c.r, arsMuni2))
				return p, arsMuni2
			},
		},
		{
			name: "missing proof",
			build: func(t *testing.T, c *proofCase) (*registryv1.Provider, string) {
				p := c.provider(t, c.ssc, c.muni2)
				p.Proof = nil
				return p, arsMuni2
			},
			want: ErrProofMissing,
		},
		{
			name: "tampered offering",
			build: func(t *testing.T, c *proofCase) (*registryv1.Provider, string) {
				p := c.provider(t, c.ssc, c.muni2)
				p.Offering = proto.Clone(p.Offering).(*registryv1.Offering)
				p.Offering.InfoUrl = "https://phishing.example"
				return p, arsMuni2
			},
			want: ErrProofOffering,
		},
		{
			name: "offering of another organisation",
			build: func(t *testing.T, c *proofCase) (*registryv1.Provider, string) {
				p := c.provider(t, c.ssc, c.muni2)
				p.Organisation = getOrg(t, c.r, arsMuni)
				return p, arsMuni2
			},
			want: ErrProofOffering,
		},
		{
			name: "offering command signed with a wrong key",
			build: func(t *testing.T, c *proofCase) (*registryv1.Provider, string) {
				// A key with the provider's kid that the registry never saw.
				k, _ := newSigningKey(t, "x")
				k.KeyID = c.ssc.key.KeyID
				return c.provider(t, &testOrg{rec: c.ssc.rec, key: k}, c.muni2), arsMuni2
			},
			want: ErrProofSignature,
		},
		{
			name: "offering command of another issuer",
			build: func(t *testing.T, c *proofCase) (*registryv1.Provider, string) {
				// Signed with the provider's key, but a command of another
				// organisation: the registry never applied it.
				return c.provider(t, &testOrg{rec: c.muni2.rec, key: c.ssc.key}, c.muni2), arsMuni2
			},
			want: ErrProofSignature,
		},
		{
			name: "authorisation command signed with a wrong key",
			build: func(t *testing.T, c *proofCase) (*registryv1.Provider, string) {
				k, _ := newSigningKey(t, "x")
				k.KeyID = c.muni2.key.KeyID
				return c.provider(t, c.ssc, &testOrg{rec: c.muni2.rec, key: k}), arsMuni2
			},
			want: ErrProofSignature,
		},
		{
			name: "signer record missing",
			build: func(t *testing.T, c *proofCase) (*registryv1.Provider, string) {
				p := c.provider(t, c.ssc, c.muni2)
				p.Proof.Signers = p.Proof.Signers[:1]
				return p, arsMuni2
			},
			want: ErrProofSignature,
		},
		{
			name: "revision after the proof's index",
			build: func(t *testing.T, c *proofCase) (*registryv1.Provider, string) {
				c.off.Revision = (c.index + 1) << RevisionBits
				return c.provider(t, c.ssc, c.muni2), arsMuni2
			},
			want: ErrProofSignature,
		},
		{
			name: "matched area not served by the offering",
			build: func(t *testing.T, c *proofCase) (*registryv1.Provider, string) {
				p := c.provider(t, c.ssc, c.muni2)
				p.MatchedArea = arsMuni2[:9]
				return p, arsMuni2
			},
			want: ErrProofArea,
		},
		{
			name: "citizen outside the matched area",
			build: func(t *testing.T, c *proofCase) (*registryv1.Provider, string) {
				return c.provider(t, c.ssc, c.muni2), arsMuni
			},
			want: ErrProofArea,
		},
		{
			name: "foreign area without an authorisation",
			build: func(t *testing.T, c *proofCase) (*registryv1.Provider, string) {
				c.auth = nil
				return c.provider(t, c.ssc, nil), arsMuni2
			},
			want: ErrProofNotEntitled,
		},
		{
			name: "swapped authorisation: shown for every service, granted for one other",
			build: func(t *testing.T, c *proofCase) (*registryv1.Provider, string) {
				c.auth.LeikaKeys = []string{leikaHund}
				p := c.provider(t, c.ssc, c.muni2)
				shown := proto.Clone(c.auth).(*registryv1.Authorisation)
				shown.LeikaKeys = nil
				p.Proof.Authorisation = shown
				return p, arsMuni2
			},
			want: ErrProofAuthorisation,
		},
		{
			name: "authorisation of another grantee",
			build: func(t *testing.T, c *proofCase) (*registryv1.Provider, string) {
				c.auth.GranteeId = arsMuni
				return c.provider(t, c.ssc, c.muni2), arsMuni2
			},
			want: ErrProofScope,
		},
		{
			name: "authorisation for another service",
			build: func(t *testing.T, c *proofCase) (*registryv1.Provider, string) {
				c.auth.LeikaKeys = []string{leikaHund}
				return c.provider(t, c.ssc, c.muni2), arsMuni2
			},
			want: ErrProofScope,
		},
		{
			name: "authorisation for another area",
			build: func(t *testing.T, c *proofCase) (*registryv1.Provider, string) {
				c.auth.Areas = []string{arsMuni}
				return c.provider(t, c.ssc, c.muni2), arsMuni2
			},
			want: ErrProofScope,
		},
		{
			name: "foreign-area authorisation: a municipality grants its neighbour's area",
			build: func(t *testing.T, c *proofCase) (*registryv1.Provider, string) {
				c.auth.GrantorId, c.auth.UpdatedBy = arsMuni, arsMuni
				return c.provider(t, c.ssc, c.muni), arsMuni2
			},
			want: ErrProofGrantor,
		},
		{
			name: "grant on behalf by a municipality",
			build: func(t *testing.T, c *proofCase) (*registryv1.Provider, string) {
				c.auth.GrantorId, c.auth.OnBehalfOf, c.auth.UpdatedBy = arsMuni, arsMuni2, arsMuni
				p := c.provider(t, c.ssc, c.muni)
				p.Proof.Signers = append(p.Proof.Signers, getOrg(t, c.r, arsMuni2))
				return p, arsMuni2
			},
			want: ErrProofGrantor,
		},
		{
			name: "grant on behalf by an association",
			build: func(t *testing.T, c *proofCase) (*registryv1.Provider, string) {
				assoc := newTestOrg(t, &registryv1.Organisation{
					Id: "091870126000", Kind: registryv1.OrganisationKind_ORGANISATION_KIND_MUNICIPAL_ASSOCIATION,
					StateCode: "09", Ars: "091870126000", Status: registryv1.OrganisationStatus_ORGANISATION_STATUS_ACTIVE,
				})
				c.auth.GrantorId, c.auth.OnBehalfOf, c.auth.UpdatedBy = assoc.id(), arsMuni2, assoc.id()
				p := c.provider(t, c.ssc, assoc)
				p.Proof.Signers = append(p.Proof.Signers, getOrg(t, c.r, arsMuni2))
				return p, arsMuni2
			},
			want: ErrProofGrantor,
		},
		{
			name: "grant on behalf by another state's agency",
			build: func(t *testing.T, c *proofCase) (*registryv1.Provider, string) {
				land := newTestOrg(t, &registryv1.Organisation{
					Id: "land-05", Kind: registryv1.OrganisationKind_ORGANISATION_KIND_STATE_AGENCY,
					StateCode: "05", Status: registryv1.OrganisationStatus_ORGANISATION_STATUS_ACTIVE,
				})
				c.auth.GrantorId, c.auth.OnBehalfOf, c.auth.UpdatedBy = land.id(), arsMuni2, land.id()
				p := c.provider(t, c.ssc, land)
				p.Proof.Signers = append(p.Proof.Signers, getOrg(t, c.r, arsMuni2))
				return p, arsMuni2
			},
			want: ErrProofGrantor,
		},
		{
			name: "grant on behalf of one municipality for another's area",
			build: func(t *testing.T, c *proofCase) (*registryv1.Provider, string) {
				c.auth.GrantorId, c.auth.OnBehalfOf, c.auth.UpdatedBy = c.state.id(), arsMuni, c.state.id()
				p := c.provider(t, c.ssc, c.state)
				p.Proof.Signers = append(p.Proof.Signers, getOrg(t, c.r, arsMuni))
				return p, arsMuni2
			},
			want: ErrProofGrantor,
		},
		{
			name: "grant on behalf of an organisation that is no municipality",
			build: func(t *testing.T, c *proofCase) (*registryv1.Provider, string) {
				c.auth.GrantorId, c.auth.OnBehalfOf, c.auth.UpdatedBy = c.state.id(), arsMuni2, c.state.id()
				p := c.provider(t, c.ssc, c.state)
				notMuni := proto.Clone(getOrg(t, c.r, arsMuni2)).(*registryv1.Organisation)
				notMuni.Kind = registryv1.OrganisationKind_ORGANISATION_KIND_MUNICIPAL_ASSOCIATION
				p.Proof.Signers = append(p.Proof.Signers, notMuni)
				return p, arsMuni2
			},
			want: ErrProofGrantor,
		},
		{
			name: "grant on behalf without the municipality's record",
			build: func(t *testing.T, c *proofCase) (*registryv1.Provider, string) {
				c.auth.GrantorId, c.auth.OnBehalfOf, c.auth.UpdatedBy = c.state.id(), arsMuni2, c.state.id()
				return c.provider(t, c.ssc, c.state), arsMuni2
			},
			want: ErrProofGrantor,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := newProofCase(t)
			p, area := tc.build(t, c)
			err := VerifyProof(p, area)
			switch {
			case tc.want == nil && err != nil:
				t.Fatalf("VerifyProof: %v", err)
			case tc.want != nil && (!errors.Is(err, tc.want) || !errors.Is(err, ErrInvalidProof)):
				t.Fatalf("VerifyProof = %v, want %v", err, tc.want)
			}
		})
	}
}

// The key rule judges a signature at the index that recorded the command,
// not at the proof's: a key revoked since still proves what it signed
// before; a key revoked before the command proves nothing.
func TestVerifyProofKeyRuleByIndex(t *testing.T) {
	c := newProofCase(t)
	c.off.Revision = (c.index-1)<<RevisionBits | 1
	p := c.provider(t, c.ssc, c.muni2)
	ssc := p.Proof.Signers[0]
	ssc.Keys[0].Status = registryv1.KeyStatus_KEY_STATUS_REVOKED
	ssc.Keys[0].RevokedAtIndex = c.index
	if err := VerifyProof(p, arsMuni2); err != nil {
		t.Fatalf("key revoked after the command: %v", err)
	}
	ssc.Keys[0].RevokedAtIndex = c.index - 1
	if err := VerifyProof(p, arsMuni2); !errors.Is(err, ErrProofSignature) {
		t.Fatalf("key revoked at the command's index: %v, want ErrProofSignature", err)
	}
}

func TestFindProvidersWithProofDelegated(t *testing.T) {
	g := newGovWorld(t)
	direct := g.authorise(g.muni2, g.ssc, arsMuni2)
	g.mustApply(g.signed(g.district, mPutAuth(&registryv1.Authorisation{
		Id: "091870000000:ssc-inntal:listed", GrantorId: "091870000000", GranteeId: "ssc-inntal",
		Areas: []string{arsListed}, OnBehalfOf: arsListed,
	})))
	g.mustApply(g.signed(g.ssc, mPutOffering(offering(g.ssc.id(), leikaGewerbe, arsMuni2, arsListed))))

	for _, tc := range []struct{ area, auth string }{
		{arsMuni2, direct.GetId()},
		{arsListed, "091870000000:ssc-inntal:listed"},
	} {
		res, err := g.r.FindProvidersWithProof(leikaGewerbe, tc.area, 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Matches) != 1 || res.Matches[0].GetOrganisation().GetId() != g.ssc.id() {
			t.Fatalf("providers for %s: %v", tc.area, res.Matches)
		}
		p := res.Matches[0]
		if p.GetProof().GetAuthorisation().GetId() != tc.auth || p.GetProof().GetAuthorisationCommand() == "" {
			t.Fatalf("proof for %s: %v", tc.area, p.GetProof())
		}
		if err := VerifyProof(p, tc.area); err != nil {
			t.Fatalf("VerifyProof(%s): %v", tc.area, err)
		}
		// The same proof does not entitle the centre elsewhere.
		if err := VerifyProof(p, arsMuni); !errors.Is(err, ErrProofArea) {
			t.Fatalf("VerifyProof for another area = %v", err)
		}
	}

	// Withdrawn: the centre leaves the answer, proof or not.
	g.mustApply(g.signed(g.muni2, mWithdrawAuth(direct.GetId())))
	res, err := g.r.FindProvidersWithProof(leikaGewerbe, arsMuni2, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Matches) != 0 {
		t.Fatalf("providers after the withdrawal: %v", res.Matches)
	}
}

func TestListAuthorisations(t *testing.T) {
	g := newGovWorld(t)
	a1 := g.authorise(g.muni2, g.ssc, arsMuni2)
	a2 := g.authorise(g.muni, g.ssc, arsMuni)
	a3 := g.authorise(g.muni, g.muni2, arsMuni)
	list := func(f AuthorisationFilter) []string {
		t.Helper()
		var ids []string
		for {
			page, next, _, err := g.r.ListAuthorisations(f)
			if err != nil {
				t.Fatalf("ListAuthorisations(%+v): %v", f, err)
			}
			for _, a := range page {
				ids = append(ids, a.GetId())
			}
			if next == "" {
				return ids
			}
			f.PageToken = next
		}
	}
	for _, tc := range []struct {
		name string
		f    AuthorisationFilter
		want []string
	}{
		{"all", AuthorisationFilter{PageSize: 1}, []string{a3.GetId(), a2.GetId(), a1.GetId()}},
		{"by grantor", AuthorisationFilter{GrantorID: arsMuni, PageSize: 1}, []string{a3.GetId(), a2.GetId()}},
		{"by grantee", AuthorisationFilter{GranteeID: g.ssc.id()}, []string{a2.GetId(), a1.GetId()}},
		{"grantor and grantee", AuthorisationFilter{GrantorID: arsMuni, GranteeID: g.ssc.id()}, []string{a2.GetId()}},
		{"area: a municipality", AuthorisationFilter{Area: arsMuni2}, []string{a1.GetId()}},
		{"area: the district around them", AuthorisationFilter{Area: "09187", GranteeID: g.ssc.id()}, []string{a2.GetId(), a1.GetId()}},
		{"area: another state", AuthorisationFilter{Area: "05"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := list(tc.f); !slices.Equal(got, tc.want) {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
	for _, f := range []AuthorisationFilter{{GrantorID: "Nope"}, {Area: "09x"}, {PageSize: 1001}, {PageToken: "!!"}, {GrantorID: arsMuni, PageToken: "eC9hZy8"}} {
		if _, _, _, err := g.r.ListAuthorisations(f); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("ListAuthorisations(%+v) = %v, want ErrInvalidArgument", f, err)
		}
	}
}
