package cli

import (
	"context"
	"errors"
	"fmt"
	"time"

	"connectrpc.com/connect"

	"github.com/verbund/verbund/keys"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
	"github.com/verbund/verbund/registry"
)

// historyCommand is "verbund history": every change to an organisation,
// each signed command checked here.
func historyCommand() Command {
	return Command{
		Name:    "history",
		Summary: "every change to an organisation, its authorisations and offerings, each signature verified",
		Run:     history,
	}
}

// verifier checks signed commands against the key rule: the signer's key as
// its current registry record says it was valid at the command's Raft index
// (keys.SigningKeyAt). Records are read once per signer.
type verifier struct {
	o    *clientOpts
	orgs map[string]*registryv1.Organisation
}

func newVerifier(o *clientOpts) *verifier {
	return &verifier{o: o, orgs: map[string]*registryv1.Organisation{}}
}

func (v *verifier) org(ctx context.Context, id string) (*registryv1.Organisation, error) {
	if o, ok := v.orgs[id]; ok {
		return o, nil
	}
	o, err := getOrg(ctx, v.o, id)
	if err != nil {
		return nil, err
	}
	if o == nil {
		return nil, fmt.Errorf("signer %s is not in the registry", id)
	}
	v.orgs[id] = o
	return o, nil
}

// verify checks the JWS raw, applied at Raft index (issued at issuedAt),
// and returns the parsed command and how it was verified.
func (v *verifier) verify(ctx context.Context, raw string, index uint64) (*registry.SignedCommand, string, error) {
	sc, err := registry.ParseCommand(raw)
	if err != nil {
		return nil, "", err
	}
	cmd := sc.Command
	org, err := v.org(ctx, cmd.GetIssuer())
	if err != nil {
		return sc, "", err
	}
	at := keys.Moment{Index: index, UnixMs: cmd.GetIssuedAtUnixMs()}
	var (
		pk   *registryv1.PublicKey
		kerr error
		how  = "verified"
	)
	muts := cmd.GetMutations()
	switch {
	case len(muts) == 1 && muts[0].GetRequestJoin() != nil && muts[0].GetRequestJoin().GetId() == cmd.GetIssuer():
		// A join request is verified as the registry did: against a
		// signing key it carries (proof of possession).
		kerr = fmt.Errorf("%w: %q is not a signing key in the join request", keys.ErrUnknownKey, sc.KID)
		for _, k := range muts[0].GetRequestJoin().GetKeys() {
			if k.GetKid() == sc.KID && k.GetUse() == keys.UseSig {
				pk, kerr, how = k, nil, "verified (proof of possession)"
			}
		}
	default:
		pk, kerr = keys.SigningKeyAt(org, sc.KID, at)
		if errors.Is(kerr, keys.ErrNotSigningKey) && len(muts) == 1 && muts[0].GetRecoverKeys().GetOrganisationId() == cmd.GetIssuer() {
			// The operator's recovery of its own keys, signed with its
			// recovery key: valid up to and including the index of the
			// recovery that replaced it (which it signed itself).
			for _, k := range org.GetKeys() {
				if k.GetKid() == sc.KID && k.GetUse() == keys.UseRec &&
					(k.GetStatus() != registryv1.KeyStatus_KEY_STATUS_REVOKED || index <= k.GetRevokedAtIndex()) {
					pk, kerr, how = k, nil, "verified (recovery key)"
				}
			}
		}
	}
	if kerr != nil {
		return sc, "", kerr
	}
	jwk, err := keys.ParsePublic(pk)
	if err != nil {
		return sc, "", err
	}
	if err := sc.Verify(jwk); err != nil {
		return sc, "", err
	}
	return sc, how, nil
}

// command fetches the signed command issuer/id (QueryService.GetCommand).
func (v *verifier) command(ctx context.Context, issuer, id string) (string, uint64, error) {
	res, err := v.o.query().GetCommand(ctx, connect.NewRequest(&registryv1.GetCommandRequest{Issuer: issuer, Id: id, Read: v.o.read()}))
	if err != nil {
		return "", 0, v.o.rpcErr(err)
	}
	return res.Msg.GetSignedCommand(), res.Msg.GetIndex(), nil
}

// verifiedEntry is a history entry with the outcome of its check.
type verifiedEntry struct {
	*registryv1.HistoryEntry
	Verified string // how it was verified, or empty
	Problem  string // why not
}

func history(ctx context.Context, env *Env, args []string) error {
	fs := newFlagSet("history ORG [flags]",
		"Show every change to organisation ORG, its authorisations (granted and received) and its\n"+
			"offerings, oldest first: what changed, when, at which Raft index, signed by whom (and\n"+
			"which person), and whether the signature verifies. Each signed command is fetched\n"+
			"(GetCommand) and checked here against the key its issuer's registry record says was\n"+
			"valid at that index, so old signatures stay verifiable after a key loss and recovery.\n"+
			"Exits 1 if any entry does not verify (with -o json: the entries as the node answered\n"+
			"them, the failures on stderr).")
	o := clientFlags(fs, true)
	limit, all := pagingFlags(fs, "entries")
	pos, err := fs.parse(env, args, 1, 1, "organisation ID")
	if err != nil {
		return err
	}
	ctx, cancel := o.context(ctx)
	defer cancel()
	q := o.query()
	out := &registryv1.GetHistoryResponse{}
	out.Entries, out.NextPageToken, err = collect(int(*limit), *all, func(size int32, token string) ([]*registryv1.HistoryEntry, string, error) {
		resp, err := q.GetHistory(ctx, connect.NewRequest(&registryv1.GetHistoryRequest{
			OrganisationId: pos[0], Read: o.read(), PageSize: uint32(size), PageToken: token,
		}))
		if err != nil {
			return nil, "", o.rpcErr(err)
		}
		out.Read = resp.Msg.GetRead()
		return resp.Msg.GetEntries(), resp.Msg.GetNextPageToken(), nil
	})
	if err != nil {
		return err
	}
	v := newVerifier(o)
	checked := make([]verifiedEntry, len(out.Entries))
	failed := 0
	// Entries of one command (a batch of offerings) share its check.
	type outcome struct{ verified, problem string }
	done := map[string]outcome{}
	for i, e := range out.Entries {
		checked[i] = verifiedEntry{HistoryEntry: e}
		key := fmt.Sprintf("%s\x00%s\x00%d\x00%s", e.GetIssuer(), e.GetCommandId(), e.GetIndex(), e.GetKid())
		oc, ok := done[key]
		if !ok {
			raw, idx, err := v.command(ctx, e.GetIssuer(), e.GetCommandId())
			if err == nil && idx != 0 && idx != e.GetIndex() {
				err = fmt.Errorf("command %s was applied at index %d, the entry says %d", e.GetCommandId(), idx, e.GetIndex())
			}
			var sc *registry.SignedCommand
			if err == nil {
				sc, oc.verified, err = v.verify(ctx, raw, e.GetIndex())
			}
			if err == nil && (sc.Command.GetIssuer() != e.GetIssuer() || sc.Command.GetId() != e.GetCommandId() || sc.KID != e.GetKid()) {
				err = fmt.Errorf("the signed command is %s/%s (kid %s), not the entry's", sc.Command.GetIssuer(), sc.Command.GetId(), sc.KID)
			}
			if err != nil {
				oc = outcome{problem: err.Error()}
			}
			done[key] = oc
		}
		checked[i].Verified, checked[i].Problem = oc.verified, oc.problem
		if oc.problem != "" {
			failed++
		}
	}
	if o.json() {
		if err := writeJSON(env.Stdout, out); err != nil {
			return err
		}
		for _, e := range checked {
			if e.Problem != "" {
				fmt.Fprintf(env.Stderr, "index %d, %s %s: NOT VERIFIED: %s\n", e.GetIndex(), e.GetChange(), e.GetSubject(), e.Problem)
			}
		}
	} else {
		w := env.Stdout
		if len(checked) == 0 {
			fmt.Fprintf(w, "no history for %s\n", pos[0])
		} else {
			tw := newTable(w)
			row(tw, "INDEX", "WHEN", "CHANGE", "SUBJECT", "SIGNED BY", "KID", "ACTOR", "SIGNATURE", "SUMMARY")
			for _, e := range checked {
				sig := e.Verified
				if sig == "" {
					sig = "NOT VERIFIED: " + e.Problem
				}
				row(tw, fmt.Sprint(e.GetIndex()), time.UnixMilli(e.GetIssuedAtUnixMs()).UTC().Format("2006-01-02 15:04:05"),
					e.GetChange(), e.GetSubject(), e.GetIssuer(), e.GetKid(), e.GetActor(), sig, oneLine(e.GetSummary(), 80))
			}
			tw.Flush()
			countLine(w, len(checked), "entry", "entries", out.NextPageToken != "")
		}
		writeReadInfo(w, out.GetRead())
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d entries did not verify", failed, len(checked))
	}
	return nil
}
