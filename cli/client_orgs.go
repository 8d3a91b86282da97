package cli

import (
	"context"
	"fmt"
	"io"
	"regexp"
	"strings"

	"connectrpc.com/connect"

	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
)

// orgsCommand is "verbund orgs": the organisations of the registry.
func orgsCommand() Command {
	return group("orgs", "list and show the organisations of the registry", []subcommand{
		{"list", "list organisations by kind, state, name or ARS", orgsList},
		{"get", "show one organisation", orgsGet},
	})
}

var reStateCode = regexp.MustCompile(`^\d{2}$`)

func orgsList(ctx context.Context, env *Env, args []string) error {
	fs := newFlagSet("orgs list [flags]", "List organisations, filtered by kind, state, name prefix or ARS prefix.")
	o := clientFlags(fs, true)
	var (
		kindFlag, state, name, ars string
		kind                       registryv1.OrganisationKind
	)
	fs.StringVar(&kindFlag, "kind", "", "organisation `kind`: "+kindFlagValues())
	fs.StringVar(&state, "state", "", "two-digit state `key`, e.g. 09 for Bayern")
	fs.StringVar(&name, "name", "", "name `prefix` (case- and umlaut-insensitive)")
	fs.StringVar(&ars, "ars", "", "`prefix` of the organisation's ARS, e.g. 09162")
	limit, all := pagingFlags(fs, "matching organisations")
	fs.check(func() (err error) {
		if kindFlag != "" {
			if kind, err = parseKind(kindFlag); err != nil {
				return err
			}
		}
		if state != "" && !reStateCode.MatchString(state) {
			return fmt.Errorf("--state %q: want two digits, e.g. 09", state)
		}
		if ars != "" && strings.Trim(ars, "0123456789") != "" {
			return fmt.Errorf("--ars %q: want digits", ars)
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
	var err error
	out.Organisations, out.NextPageToken, err = collect(int(*limit), *all, func(size int32, token string) ([]*registryv1.Organisation, string, error) {
		resp, err := q.ListOrganisations(ctx, connect.NewRequest(&registryv1.ListOrganisationsRequest{
			Kind: kind, StateCode: state, NamePrefix: name, ArsPrefix: ars, Read: o.read(),
			PageSize: uint32(size), PageToken: token,
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

	return o.emit(env, out, out.GetRead(), func(w io.Writer) {
		if len(out.Organisations) == 0 {
			fmt.Fprintln(w, "no organisations found")
			return
		}
		tw := newTable(w)
		row(tw, "ID", "KIND", "NAME", "STATE", "ARS", "STATUS")
		for _, org := range out.Organisations {
			row(tw, org.GetId(), kindName(org.GetKind()), org.GetName(), org.GetStateCode(), org.GetArs(), statusName(org.GetStatus()))
		}
		tw.Flush()
		countLine(w, len(out.Organisations), "organisation", "organisations", out.NextPageToken != "")
	})
}

func orgsGet(ctx context.Context, env *Env, args []string) error {
	fs := newFlagSet("orgs get ID [flags]", "Show one organisation: ARS or slug id, e.g. 091620000000 or ssc-oberland.")
	o := clientFlags(fs, true)
	pos, err := fs.parse(env, args, 1, 1, "organisation ID")
	if err != nil {
		return err
	}
	ctx, cancel := o.context(ctx)
	defer cancel()
	resp, err := o.query().GetOrganisation(ctx, connect.NewRequest(&registryv1.GetOrganisationRequest{Id: pos[0], Read: o.read()}))
	if err != nil {
		return o.rpcErr(err)
	}
	m := resp.Msg
	return o.emit(env, m, m.GetRead(), func(w io.Writer) {
		org := m.GetOrganisation()
		t := newKV(w)
		t.add("ID", org.GetId())
		t.add("Name", org.GetName())
		t.add("Kind", kindName(org.GetKind()))
		t.add("Status", statusName(org.GetStatus()))
		t.add("State", org.GetStateCode())
		t.add("ARS", org.GetArs())
		t.add("AGS", org.GetAgs())
		t.add("Parent", org.GetParentId())
		t.add("Postal code", org.GetPostalCode())
		if org.GetPopulation() > 0 {
			t.add("Population", fmt.Sprintf("%d", org.GetPopulation()))
		}
		t.add("Location", formatGeo(org.GetLocation()))
		t.add("API endpoint", org.GetApiEndpoint())
		if len(org.GetKeys()) > 0 {
			t.add("Keys SHA-256", keysDigest(org.GetKeys()))
		}
		if r := org.GetStatusReason(); r != "" {
			t.add("Status reason", r+" (by "+cell(org.GetStatusChangedBy())+")")
		}
		t.add("Revision", formatRevision(org.GetRevision(), org.GetUpdatedAtUnixMs(), org.GetUpdatedBy()))
		t.flush()
		if len(org.GetKeys()) > 0 {
			fmt.Fprintln(w, "\nKeys:")
			tw := newTable(w)
			row(tw, "  KID", "USE", "ALG", "STATUS", "NOT AFTER")
			for _, k := range org.GetKeys() {
				row(tw, "  "+k.GetKid(), k.GetUse(), k.GetAlg(), keyStatusName(k.GetStatus()), formatTime(k.GetNotAfterUnixMs()))
			}
			tw.Flush()
		}
		fmt.Fprintln(w)
	})
}
