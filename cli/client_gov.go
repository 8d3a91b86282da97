package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strings"

	"connectrpc.com/connect"
	jose "github.com/go-jose/go-jose/v4"
	"google.golang.org/protobuf/proto"

	"github.com/verbund/verbund/keys"
	nodev1 "github.com/verbund/verbund/proto/gen/verbund/node/v1"
	"github.com/verbund/verbund/proto/gen/verbund/node/v1/nodev1connect"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
	"github.com/verbund/verbund/registry"
)

// Governance commands: an approver's decisions (org), authorisations
// (authorise) and key recovery (keys recover). Each is a registry command
// signed with the deciding organisation's private key (--key, --as) and
// published through the node at --addr; Publish is an open RPC, the
// signature is the credential. The registry applies or refuses it by its
// governance rules on every replica; a refusal is printed as the registry
// gave it (it names the rule) and the command exits 1.

// orgCommand is "verbund org": an approver's decisions about organisations.
func orgCommand() Command {
	return group("org", "an approver's decisions: list, register, approve, decline, suspend, reinstate or revoke an organisation", []subcommand{
		{"pending", "list join requests waiting for approval, with the keys' fingerprints", orgPending},
		{"approve", "approve a pending join request (compare the fingerprint first)", orgStatus(registryv1.OrganisationStatus_ORGANISATION_STATUS_ACTIVE, "approve")},
		{"decline", "decline a pending join request", orgStatus(registryv1.OrganisationStatus_ORGANISATION_STATUS_DECLINED, "decline")},
		{"suspend", "suspend an organisation: its writes and handovers are refused everywhere", orgStatus(registryv1.OrganisationStatus_ORGANISATION_STATUS_SUSPENDED, "suspend")},
		{"reinstate", "reinstate a suspended organisation", orgStatus(registryv1.OrganisationStatus_ORGANISATION_STATUS_ACTIVE, "reinstate")},
		{"revoke", "revoke an organisation for good", orgStatus(registryv1.OrganisationStatus_ORGANISATION_STATUS_REVOKED, "revoke")},
		{"list", "list an organisation in the directory (REGISTERED: no node, no keys yet)", orgListEntry},
		{"register", "register an organisation directly with the keys of its node (registration by the responsible office)", orgRegister},
	})
}

// signerFlags are --key and --as: the deciding organisation and its key.
type signerFlags struct{ keyFile, as, actor string }

func (s *signerFlags) register(fs *flagSet, who string) {
	fs.StringVar(&s.keyFile, "key", os.Getenv("VERBUND_KEY"), "private signing JWK `file` of the "+who+" (env VERBUND_KEY)")
	fs.StringVar(&s.as, "as", os.Getenv("VERBUND_AS"), "organisation `id` of the "+who+" (env VERBUND_AS)")
	fs.StringVar(&s.actor, "actor", defaultActor(), "the `person` deciding, recorded with the signed command in the history (env VERBUND_ACTOR; default: your user@host)")
	fs.check(func() error {
		switch {
		case s.keyFile == "":
			return errors.New("--key is required")
		case s.as == "":
			return errors.New("--as is required")
		case !registry.ValidOrgID(s.as):
			return fmt.Errorf("--as %q is not an organisation id", s.as)
		}
		return nil
	})
}

func (s *signerFlags) load() (jose.JSONWebKey, error) { return keys.Load(s.keyFile) }

// publish signs cmd, naming the person (--actor), and publishes it.
func (s *signerFlags) publish(ctx context.Context, o *clientOpts, cmd *registryv1.Command, key jose.JSONWebKey) (*registryv1.CommandResult, error) {
	cmd.Actor = s.actor
	return publishSigned(ctx, o, cmd, key)
}

// defaultActor names the person at this terminal: $VERBUND_ACTOR, else
// user@host.
func defaultActor() string {
	if a := os.Getenv("VERBUND_ACTOR"); a != "" {
		return a
	}
	name := os.Getenv("USER")
	if u, err := user.Current(); err == nil && u.Username != "" {
		name = u.Username
	}
	host, _ := os.Hostname()
	switch {
	case name == "":
		return ""
	case host == "":
		return name
	}
	return name + "@" + host
}

// refusedError is the registry's refusal of a command: its error code and
// message, which names the rule.
type refusedError struct{ code, msg string }

func (e *refusedError) Error() string {
	return fmt.Sprintf("refused by the registry: %s: %s", e.code, e.msg)
}

// publishSigned signs cmd with key and publishes it through the node at
// --addr. A refusal comes back as a *refusedError.
func publishSigned(ctx context.Context, o *clientOpts, cmd *registryv1.Command, key jose.JSONWebKey) (*registryv1.CommandResult, error) {
	jws, err := registry.SignCommand(cmd, key)
	if err != nil {
		return nil, err
	}
	pr, err := o.publisher().Publish(ctx, connect.NewRequest(&registryv1.PublishRequest{SignedCommands: []string{jws}}))
	if err != nil {
		return nil, o.rpcErr(err)
	}
	if len(pr.Msg.GetResults()) == 0 {
		return nil, fmt.Errorf("node %s returned no result for the command", o.addr)
	}
	r := pr.Msg.GetResults()[0]
	if r.GetErrorCode() != "" {
		return r, &refusedError{code: r.GetErrorCode(), msg: r.GetErrorMessage()}
	}
	return r, nil
}

// getOrg reads an organisation, linearizable; nil if there is none.
func getOrg(ctx context.Context, o *clientOpts, id string) (*registryv1.Organisation, error) {
	res, err := o.query().GetOrganisation(ctx, connect.NewRequest(&registryv1.GetOrganisationRequest{Id: id,
		Read: &registryv1.ReadOptions{Consistency: registryv1.Consistency_CONSISTENCY_LINEARIZABLE}}))
	if connect.CodeOf(err) == connect.CodeNotFound {
		return nil, nil
	}
	if err != nil {
		return nil, o.rpcErr(err)
	}
	return res.Msg.GetOrganisation(), nil
}

// keysDigest is the fingerprint of an organisation's keys that an approver
// compares before approving (ChangeOrganisationStatus.keys_sha256).
func keysDigest(pks []*registryv1.PublicKey) string { return registry.KeysDigest(pks) }

func orgPending(ctx context.Context, env *Env, args []string) error {
	fs := newFlagSet("org pending [--state SS] [flags]",
		"List the organisations whose join request waits for approval, with the SHA-256\n"+
			"fingerprint of the keys they sent. Compare it with the one the organisation gives\n"+
			"you out of band (verbund join prints it) before you approve.")
	o := clientFlags(fs, true)
	var state string
	fs.StringVar(&state, "state", "", "two-digit state `key`, e.g. 09")
	fs.check(func() error {
		if state != "" && !reStateCode.MatchString(state) {
			return fmt.Errorf("--state %q: want two digits, e.g. 09", state)
		}
		return nil
	})
	if _, err := fs.parse(env, args, 0, 0, ""); err != nil {
		return err
	}
	ctx, cancel := o.context(ctx)
	defer cancel()
	q := o.query()
	out := &registryv1.ListOrganisationsResponse{}
	all, _, err := collect(0, true, func(size int32, token string) ([]*registryv1.Organisation, string, error) {
		resp, err := q.ListOrganisations(ctx, connect.NewRequest(&registryv1.ListOrganisationsRequest{
			StateCode: state, Read: o.read(), PageSize: uint32(size), PageToken: token,
		}))
		if err != nil {
			return nil, "", o.rpcErr(err)
		}
		out.Read = resp.Msg.GetRead()
		return resp.Msg.GetOrganisations(), resp.Msg.GetNextPageToken(), nil
	})
	if err != nil {
		return err
	}
	for _, org := range all {
		if org.GetStatus() == registryv1.OrganisationStatus_ORGANISATION_STATUS_PENDING {
			out.Organisations = append(out.Organisations, org)
		}
	}
	return o.emit(env, out, out.GetRead(), func(w io.Writer) {
		if len(out.Organisations) == 0 {
			fmt.Fprintln(w, "no join request is waiting")
			return
		}
		tw := newTable(w)
		row(tw, "ID", "KIND", "NAME", "STATE", "ENDPOINT", "KEYS SHA-256")
		for _, org := range out.Organisations {
			row(tw, org.GetId(), kindName(org.GetKind()), org.GetName(), org.GetStateCode(), org.GetApiEndpoint(), keysDigest(org.GetKeys()))
		}
		tw.Flush()
		countLine(w, len(out.Organisations), "join request", "join requests", false)
	})
}

// orgStatus returns the subcommand that moves an organisation to status.
func orgStatus(status registryv1.OrganisationStatus, verb string) func(ctx context.Context, env *Env, args []string) error {
	return func(ctx context.Context, env *Env, args []string) error {
		synopsis := "org " + verb + " ORG --reason TEXT --key FILE --as APPROVER [flags]"
		if verb == "approve" {
			synopsis = "org approve ORG --fingerprint KEYS_SHA256 --reason TEXT --key FILE --as APPROVER [flags]"
		}
		fs := newFlagSet(synopsis,
			"Sign and publish the decision to "+verb+" organisation ORG, as its approver: the state\n"+
				"agency of its state, or the network operator for state and federal agencies and\n"+
				"organisations without a state. The registry refuses it (naming the rule) if --as\n"+
				"is not ORG's approver or the move is not allowed from ORG's current status.")
		o := clientFlags(fs, false)
		var s signerFlags
		s.register(fs, "approver")
		var reason, fingerprint string
		fs.StringVar(&reason, "reason", "", "why (required; recorded in the organisation's history)")
		if verb == "approve" {
			fs.StringVar(&fingerprint, "fingerprint", "", "the keys' SHA-256 `fingerprint` you compared (verbund org pending)")
		}
		fs.check(func() error {
			switch {
			case strings.TrimSpace(reason) == "":
				return errors.New("--reason is required")
			case verb == "approve" && fingerprint == "":
				return errors.New("--fingerprint is required: compare the keys' fingerprint (verbund org pending) with the one the organisation gave you")
			case verb == "approve" && !reHex64.MatchString(fingerprint):
				return fmt.Errorf("--fingerprint %q: want 64 hex digits", fingerprint)
			}
			return nil
		})
		pos, err := fs.parse(env, args, 1, 1, "organisation ID")
		if err != nil {
			return err
		}
		key, err := s.load()
		if err != nil {
			return err
		}
		ctx, cancel := o.context(ctx)
		defer cancel()
		cmd := registry.NewCommand(s.as, &registryv1.Mutation{Op: &registryv1.Mutation_ChangeStatus{ChangeStatus: &registryv1.ChangeOrganisationStatus{
			OrganisationId: pos[0], Status: status, Reason: reason, KeysSha256: strings.ToLower(fingerprint),
		}}})
		r, err := s.publish(ctx, o, cmd, key)
		if err != nil {
			return err
		}
		return o.emit(env, r, nil, func(w io.Writer) {
			fmt.Fprintf(w, "%s: %s is now %s (signed by %s, at index %d)\n", verb, pos[0], statusName(status), s.as, r.GetIndex())
		})
	}
}

// orgFields are the identity flags of a directory entry.
type orgFields struct {
	kind, name, state, ars, ags, parent string
}

func (f *orgFields) register(fs *flagSet) {
	fs.StringVar(&f.kind, "kind", "", "organisation `kind`: "+kindFlagValues())
	fs.StringVar(&f.name, "name", "", "organisation `name`")
	fs.StringVar(&f.state, "state", "", "two-digit state `code`")
	fs.StringVar(&f.ars, "ars", "", "12-digit `ARS` of its area")
	fs.StringVar(&f.ags, "ags", "", "8-digit `AGS` (municipalities)")
	fs.StringVar(&f.parent, "parent", "", "parent organisation `id` (e.g. the district)")
	fs.check(func() error {
		if f.kind != "" {
			if _, err := parseKind(f.kind); err != nil {
				return err
			}
		}
		if f.state != "" && !reStateCode.MatchString(f.state) {
			return fmt.Errorf("--state %q: want two digits", f.state)
		}
		if f.ars != "" && !registry.ValidARS(f.ars) {
			return fmt.Errorf("--ars %q: want 12 digits", f.ars)
		}
		return nil
	})
}

// apply sets the given fields on rec. An organisation whose id is an ARS
// (municipalities, associations, districts) has that ARS unless --ars says
// otherwise.
func (f *orgFields) apply(rec *registryv1.Organisation) {
	if f.kind != "" {
		rec.Kind, _ = parseKind(f.kind)
	}
	for _, p := range []struct {
		v   string
		dst *string
	}{{f.name, &rec.Name}, {f.state, &rec.StateCode}, {f.ars, &rec.Ars}, {f.ags, &rec.Ags}, {f.parent, &rec.ParentId}} {
		if p.v != "" {
			*p.dst = p.v
		}
	}
	if rec.Ars == "" && registry.ValidARS(rec.Id) {
		rec.Ars = rec.Id
	}
	if rec.StateCode == "" && len(rec.Ars) >= 2 {
		rec.StateCode = rec.Ars[:2]
	}
}

func orgListEntry(ctx context.Context, env *Env, args []string) error {
	fs := newFlagSet("org list ORG --kind K --name N [--state SS] [--ars ARS] --key FILE --as APPROVER [flags]",
		"List organisation ORG in the directory, as its approver: status REGISTERED, no keys.\n"+
			"It runs no node yet and signs nothing; its district or state agency may authorise\n"+
			"on its behalf until it joins (verbund join) and is approved.")
	o := clientFlags(fs, false)
	var s signerFlags
	s.register(fs, "approver")
	var f orgFields
	f.register(fs)
	fs.check(func() error {
		if f.kind == "" || f.name == "" {
			return errors.New("--kind and --name are required")
		}
		return nil
	})
	pos, err := fs.parse(env, args, 1, 1, "organisation ID")
	if err != nil {
		return err
	}
	key, err := s.load()
	if err != nil {
		return err
	}
	rec := &registryv1.Organisation{Id: pos[0], Status: registryv1.OrganisationStatus_ORGANISATION_STATUS_REGISTERED}
	f.apply(rec)
	ctx, cancel := o.context(ctx)
	defer cancel()
	r, err := s.publish(ctx, o, registry.NewCommand(s.as, &registryv1.Mutation{Op: &registryv1.Mutation_PutOrganisation{PutOrganisation: rec}}), key)
	if err != nil {
		return err
	}
	return o.emit(env, r, nil, func(w io.Writer) {
		fmt.Fprintf(w, "listed %s (%s, %s) as REGISTERED, signed by %s, at index %d\n", rec.GetId(), rec.GetName(), kindName(rec.GetKind()), s.as, r.GetIndex())
	})
}

// nodeKeys returns the public halves of the keys in a node's data dir
// (keys/signing.jwk, keys/encryption.jwk and, if there is one,
// keys/recovery.pub.jwk).
func nodeKeys(dir string) ([]*registryv1.PublicKey, error) {
	var out []*registryv1.PublicKey
	for _, name := range []string{"signing.jwk", "encryption.jwk"} {
		k, err := keys.Load(filepath.Join(dir, "keys", name))
		if err != nil {
			return nil, err
		}
		pk, err := keys.Published(k)
		if err != nil {
			return nil, err
		}
		out = append(out, pk)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "keys", "recovery.pub.jwk")); err == nil {
		var k jose.JSONWebKey
		if err := k.UnmarshalJSON(b); err != nil {
			return nil, fmt.Errorf("recovery key: %w", err)
		}
		pk, err := keys.Published(k)
		if err != nil {
			return nil, err
		}
		out = append(out, pk)
	}
	return out, nil
}

// replaceKeys returns next followed by the keys of prev that are not in
// next, revoked: kept so that what they signed before stays verifiable
// (the registry stamps the index of the revocation).
func replaceKeys(prev, next []*registryv1.PublicKey) []*registryv1.PublicKey {
	out := slices.Clone(next)
	for _, pk := range prev {
		if slices.ContainsFunc(next, func(n *registryv1.PublicKey) bool { return n.GetKid() == pk.GetKid() }) {
			continue
		}
		c := proto.Clone(pk).(*registryv1.PublicKey)
		c.Status = registryv1.KeyStatus_KEY_STATUS_REVOKED
		out = append(out, c)
	}
	return out
}

func orgRegister(ctx context.Context, env *Env, args []string) error {
	fs := newFlagSet("org register ORG (--node URL | --keys-from DIR [--endpoint URL]) --key FILE --as APPROVER [flags]",
		"Register organisation ORG directly with its node's public keys and endpoint, signed by\n"+
			"its approver (registration by the responsible office, which vouches for keys it\n"+
			"received out of band). The keys come from the running node at --node\n"+
			"(NodeService.GetStatus) or from the data dir --keys-from. A new or listed\n"+
			"organisation becomes ACTIVE; an existing one keeps its status and other fields, and\n"+
			"its previous keys are kept as REVOKED (what they signed before stays verifiable).\n"+
			"--kind and --name are needed for a new record.")
	o := clientFlags(fs, false)
	var s signerFlags
	s.register(fs, "approver")
	var f orgFields
	f.register(fs)
	var nodeAddr, keysFrom, endpoint string
	fs.StringVar(&nodeAddr, "node", "", "API `url` of the organisation's running node")
	fs.StringVar(&keysFrom, "keys-from", "", "the organisation's node data `dir` (keys/*.jwk)")
	fs.StringVar(&endpoint, "endpoint", "", "the organisation's node API `url` other nodes call (default: the node's peer URL)")
	fs.check(func() error {
		if (nodeAddr == "") == (keysFrom == "") {
			return errors.New("give one of --node and --keys-from")
		}
		if nodeAddr != "" {
			var err error
			nodeAddr, err = apiURL("--node", nodeAddr)
			return err
		}
		return nil
	})
	pos, err := fs.parse(env, args, 1, 1, "organisation ID")
	if err != nil {
		return err
	}
	key, err := s.load()
	if err != nil {
		return err
	}
	ctx, cancel := o.context(ctx)
	defer cancel()
	var pks []*registryv1.PublicKey
	if nodeAddr != "" {
		st, err := nodev1connect.NewNodeServiceClient(httpClient, nodeAddr).GetStatus(ctx, connect.NewRequest(&nodev1.GetStatusRequest{}))
		if err != nil {
			return fmt.Errorf("node %s: %w", nodeAddr, o.rpcErr(err))
		}
		if id := st.Msg.GetOrganisationId(); id != pos[0] {
			return fmt.Errorf("the node at %s runs for organisation %s, not %s", nodeAddr, id, pos[0])
		}
		pks = st.Msg.GetKeys()
		if endpoint == "" {
			endpoint = st.Msg.GetPeerUrl()
		}
	} else if pks, err = nodeKeys(keysFrom); err != nil {
		return err
	}
	prev, err := getOrg(ctx, o, pos[0])
	if err != nil {
		return err
	}
	rec := &registryv1.Organisation{Id: pos[0]}
	if prev != nil {
		rec = proto.Clone(prev).(*registryv1.Organisation)
	} else if f.kind == "" || f.name == "" {
		return fs.usageErr("organisation %s is not in the directory yet: --kind and --name are required", pos[0])
	}
	f.apply(rec)
	rec.Revision, rec.UpdatedAtUnixMs, rec.UpdatedBy, rec.StatusReason, rec.StatusChangedBy, rec.InactiveSinceIndex = 0, 0, "", "", "", 0
	rec.Keys = replaceKeys(prev.GetKeys(), pks)
	if endpoint != "" {
		rec.ApiEndpoint = endpoint
	}
	switch prev.GetStatus() {
	case registryv1.OrganisationStatus_ORGANISATION_STATUS_UNSPECIFIED, registryv1.OrganisationStatus_ORGANISATION_STATUS_REGISTERED,
		registryv1.OrganisationStatus_ORGANISATION_STATUS_PENDING:
		rec.Status = registryv1.OrganisationStatus_ORGANISATION_STATUS_ACTIVE
	}
	r, err := s.publish(ctx, o, registry.NewCommand(s.as, &registryv1.Mutation{Op: &registryv1.Mutation_PutOrganisation{PutOrganisation: rec}}), key)
	if err != nil {
		return err
	}
	return o.emit(env, r, nil, func(w io.Writer) {
		fmt.Fprintf(w, "registered %s (%s): %d keys (fingerprint %s), endpoint %s, status %s, signed by %s, at index %d\n",
			rec.GetId(), rec.GetName(), len(pks), keysDigest(rec.GetKeys()), cell(rec.GetApiEndpoint()), statusName(rec.GetStatus()), s.as, r.GetIndex())
	})
}
