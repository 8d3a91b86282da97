package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"

	"connectrpc.com/connect"

	"github.com/verbund/verbund/keys"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
	"github.com/verbund/verbund/registry"
)

// joinCommand is "verbund join": an organisation asks to join a network.
func joinCommand() Command {
	return Command{
		Name:    "join",
		Summary: "ask to join a network: a join request signed with the organisation's own key, pending its approver",
		Run:     runJoin,
	}
}

// joinRecord is the record a join request sends: the identity from the
// data dir's config and the public halves of its keys.
func joinRecord(cfg nodeFlags, pks []*registryv1.PublicKey, endpoint string) (*registryv1.Organisation, error) {
	kind, err := parseKind(cfg.Kind)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	rec := &registryv1.Organisation{
		Id: cfg.Org, Kind: kind, Name: cfg.OrgName, StateCode: cfg.State, Ars: cfg.ARS,
		ApiEndpoint: endpoint, Keys: pks,
	}
	if rec.Ars != "" && kind == registryv1.OrganisationKind_ORGANISATION_KIND_MUNICIPALITY && len(rec.Ars) == 12 {
		rec.Ags = rec.Ars[:5] + rec.Ars[9:]
	}
	return rec, nil
}

func runJoin(ctx context.Context, env *Env, args []string) error {
	fs := newFlagSet("join --network ADDR --data DIR [--endpoint URL] [flags]",
		"Ask to join the network at ADDR (the API URL of any of its nodes) as the organisation\n"+
			"whose data dir (made by verbund init) is DIR: publish a join request with its identity,\n"+
			"endpoint and public keys, signed with its own signing key (proof of possession). The\n"+
			"registry records it as PENDING; print the record and the keys' SHA-256 fingerprint,\n"+
			"which you give your approver out of band (your state's agency; the network operator\n"+
			"for state and federal agencies). It compares the fingerprint and approves:\n"+
			"  verbund org approve ID --fingerprint SHA256 --reason ... --key ... --as ...\n"+
			"Until then the organisation can publish nothing and receive no handovers. An\n"+
			"organisation listed by its approver keeps the identity it was listed with.")
	o := clientFlags(fs, false)
	var network, dir, endpoint string
	fs.StringVar(&network, "network", "", "API `url` of a node of the network (instead of --addr)")
	fs.StringVar(&dir, "data", "", "the organisation's data `dir` (verbund init)")
	fs.StringVar(&endpoint, "endpoint", "", "API `url` other nodes call (default: from the config)")
	fs.check(func() error {
		if dir == "" {
			return errors.New("--data is required")
		}
		if network != "" {
			var err error
			o.addr, err = apiURL("--network", network)
			return err
		}
		return nil
	})
	if _, err := fs.parse(env, args, 0, 0, ""); err != nil {
		return err
	}
	cfg, err := loadConfig(dir)
	if err != nil {
		return err
	}
	if endpoint == "" {
		endpoint = cfg.Endpoint
	}
	sig, err := keys.Load(filepath.Join(dir, "keys", "signing.jwk"))
	if err != nil {
		return err
	}
	pks, err := nodeKeys(dir)
	if err != nil {
		return err
	}
	rec, err := joinRecord(cfg, pks, endpoint)
	if err != nil {
		return err
	}
	ctx, cancel := o.context(ctx)
	defer cancel()
	prev, err := getOrg(ctx, o, rec.GetId())
	if err != nil {
		return err
	}
	if prev != nil && prev.GetStatus() == registryv1.OrganisationStatus_ORGANISATION_STATUS_ACTIVE && hasActiveKey(prev, sig.KeyID) {
		fmt.Fprintf(env.Stdout, "%s is a member already (ACTIVE, signing with %s): nothing to do\n", rec.GetId(), sig.KeyID)
		return nil
	}
	r, err := publishSigned(ctx, o, registry.NewCommand(rec.GetId(), &registryv1.Mutation{Op: &registryv1.Mutation_RequestJoin{RequestJoin: rec}}), sig)
	if err != nil {
		return err
	}
	// The record as the registry keeps it (a listed organisation keeps its
	// listed identity).
	res, err := o.query().GetOrganisation(ctx, connect.NewRequest(&registryv1.GetOrganisationRequest{Id: rec.GetId(),
		Read: &registryv1.ReadOptions{MinIndex: r.GetIndex()}}))
	if err != nil {
		return o.rpcErr(err)
	}
	got := res.Msg.GetOrganisation()
	return o.emit(env, got, nil, func(w io.Writer) {
		fmt.Fprintf(w, "Join request of %s recorded at index %d.\n\n", got.GetId(), r.GetIndex())
		t := newKV(w)
		t.add("ID", got.GetId())
		t.add("Name", got.GetName())
		t.add("Kind", kindName(got.GetKind()))
		t.add("Status", statusName(got.GetStatus()))
		t.add("State", got.GetStateCode())
		t.add("ARS", got.GetArs())
		t.add("API endpoint", got.GetApiEndpoint())
		for _, k := range got.GetKeys() {
			t.add("Key", k.GetKid()+" ("+k.GetUse()+", "+keyStatusName(k.GetStatus())+")")
		}
		t.add("Keys SHA-256", keysDigest(got.GetKeys()))
		t.flush()
		fmt.Fprintf(w, "\nGive your approver the Keys SHA-256 above out of band; it approves with\n"+
			"  verbund org approve %s --fingerprint %s --reason ... --key ... --as ...\n", got.GetId(), keysDigest(got.GetKeys()))
	})
}

// hasActiveKey reports whether org has kid as an ACTIVE signing key.
func hasActiveKey(org *registryv1.Organisation, kid string) bool {
	for _, k := range org.GetKeys() {
		if k.GetKid() == kid && k.GetUse() == keys.UseSig && k.GetStatus() == registryv1.KeyStatus_KEY_STATUS_ACTIVE {
			return true
		}
	}
	return false
}
