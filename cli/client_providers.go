package cli

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"

	"connectrpc.com/connect"

	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
	"github.com/verbund/verbund/registry"
)

// providersCommand is "verbund providers": who delivers a service where.
func providersCommand() Command {
	return Command{
		Name:    "providers",
		Summary: "who delivers a service to the citizens of an area, best first",
		Run:     providers,
	}
}

// offeringsCommand is "verbund offerings": one offering in detail.
func offeringsCommand() Command {
	return group("offerings", "show offerings: who delivers a service where and how", []subcommand{
		{"get", "show one offering", offeringsGet},
	})
}

const providersSynopsis = "providers --service LEIKA --area ARS|AGS|NAME|POSTCODE [--verify] [flags]"

func providers(ctx context.Context, env *Env, args []string) error {
	fs := newFlagSet(providersSynopsis,
		"Find who delivers a service to the citizens of an area, best first: own\n"+
			"municipality, then shared service centres and neighbours, district, state.\n"+
			"--verify asks for each provider's proof of responsibility (the signed command that\n"+
			"published its offering and the signed authorisation that entitles it to serve the\n"+
			"area) and checks it here, offline; it exits 1 if any provider's proof fails.")
	o := clientFlags(fs, true)
	var service, area string
	var limit uint
	var verify bool
	fs.BoolVar(&verify, "verify", false, "ask for and check each provider's proof of responsibility")
	fs.StringVar(&service, "service", "", "14-digit LeiKa `key` of the service")
	fs.StringVar(&area, "area", "", "the citizen's municipality: 12-digit `ARS`, 8-digit AGS, name (\"Augsburg\") or postcode")
	fs.UintVar(&limit, "limit", 0, "at most `n` providers (server default 10, at most 100)")
	fs.check(func() error {
		switch {
		case service == "":
			return fmt.Errorf("--service is required")
		case !registry.ValidLeiKa(service):
			return fmt.Errorf("--service %q: want a 14-digit LeiKa key starting with 99", service)
		}
		return checkAreaFlag(area)
	})
	if _, err := fs.parse(env, args, 0, 0, ""); err != nil {
		return err
	}
	ctx, cancel := o.context(ctx)
	defer cancel()
	area, err := resolveArea(ctx, o, area)
	if err != nil {
		return err
	}
	resp, err := o.query().FindProviders(ctx, connect.NewRequest(&registryv1.FindProvidersRequest{
		LeikaKey: service, Area: area, Limit: uint32(min(limit, 1<<31)), Read: o.read(), IncludeProof: verify,
	}))
	if err != nil {
		return o.rpcErr(err)
	}
	m := resp.Msg
	if !verify {
		return o.emit(env, m, m.GetRead(), func(w io.Writer) { writeProviders(w, m, service, area) })
	}
	// The citizen's ARS (--area may be an AGS).
	ars := area
	if a := m.GetAreaOrganisation().GetArs(); a != "" {
		ars = a
	}
	failed := 0
	verdicts := make([]string, len(m.GetProviders()))
	for i, p := range m.GetProviders() {
		if err := registry.VerifyProof(p, ars); err != nil {
			verdicts[i] = "NOT VERIFIED: " + err.Error()
			failed++
		} else {
			verdicts[i] = "verified"
			if a := p.GetProof().GetAuthorisation(); a != nil {
				verdicts[i] += fmt.Sprintf(" (authorisation %s by %s)", a.GetId(), a.GetGrantorId())
			} else {
				verdicts[i] += " (own area)"
			}
		}
	}
	if err := o.emit(env, m, m.GetRead(), func(w io.Writer) {
		writeProviders(w, m, service, area)
		fmt.Fprintln(w, "Proofs of responsibility:")
		tw := newTable(w)
		for i, p := range m.GetProviders() {
			row(tw, "  "+rankOf(p, i), p.GetOrganisation().GetId(), p.GetMatchedArea(), verdicts[i])
		}
		tw.Flush()
	}); err != nil {
		return err
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d providers' proofs did not verify", failed, len(verdicts))
	}
	return nil
}

func writeProviders(w io.Writer, m *registryv1.FindProvidersResponse, service, area string) {
	svc := service
	if n := m.GetService().GetName(); n != "" {
		svc = fmt.Sprintf("%s (%s)", n, service)
	}
	where := area
	if a := m.GetAreaOrganisation(); a.GetName() != "" {
		where = fmt.Sprintf("%s (%s)", a.GetName(), a.GetId())
	}
	t := newKV(w)
	t.add("Service", svc)
	t.add("Area", where)
	t.flush()
	fmt.Fprintln(w)
	if len(m.GetProviders()) == 0 {
		fmt.Fprintln(w, "no provider found")
		return
	}
	tw := newTable(w)
	row(tw, "RANK", "MATCH", "PROVIDER", "ID", "CHANNELS", "FEES", "PROCESSING")
	for i, p := range m.GetProviders() {
		row(tw, rankOf(p, i), matchName(p.GetMatch()), oneLine(providerName(p), 50), p.GetOrganisation().GetId(),
			channelSummary(p.GetOffering().GetChannels()), feeSummary(p.GetOffering().GetFees()),
			processingSummary(p.GetOffering().GetProcessingTime()))
	}
	tw.Flush()
	for i, p := range m.GetProviders() {
		off := p.GetOffering()
		fmt.Fprintf(w, "\n%s. %s (%s)\n", rankOf(p, i), oneLine(providerName(p), 0), p.GetOrganisation().GetId())
		d := &detail{w: w, indent: "   ", width: 16}
		how := []string{matchName(p.GetMatch())}
		if a := p.GetMatchedArea(); a != "" {
			how = append(how, "area "+a)
		}
		if km := p.GetDistanceKm(); km > 0 {
			how = append(how, fmt.Sprintf("%.1f km away", km))
		}
		d.line("match", strings.Join(slices.DeleteFunc(how, func(s string) bool { return s == "" }), ", "))
		offering := off.GetId()
		if n := off.GetName(); n != "" {
			offering = fmt.Sprintf("%s (%s)", n, off.GetId())
		}
		d.line("offering", offering)
		writeOfferingDetail(d, off)
	}
	fmt.Fprintln(w)
}

func rankOf(p *registryv1.Provider, i int) string {
	if p.GetRank() > 0 {
		return fmt.Sprintf("%d", p.GetRank())
	}
	return fmt.Sprintf("%d", i+1)
}

func providerName(p *registryv1.Provider) string {
	if n := p.GetOrganisation().GetName(); n != "" {
		return n
	}
	return p.GetOffering().GetOrganisationId()
}

func offeringsGet(ctx context.Context, env *Env, args []string) error {
	fs := newFlagSet("offerings get ID [flags]", "Show one offering, e.g. \"091620000000:99115005000000\".")
	o := clientFlags(fs, true)
	pos, err := fs.parse(env, args, 1, 1, "offering ID")
	if err != nil {
		return err
	}
	ctx, cancel := o.context(ctx)
	defer cancel()
	resp, err := o.query().GetOffering(ctx, connect.NewRequest(&registryv1.GetOfferingRequest{Id: pos[0], Read: o.read()}))
	if err != nil {
		return o.rpcErr(err)
	}
	m := resp.Msg
	return o.emit(env, m, m.GetRead(), func(w io.Writer) {
		off := m.GetOffering()
		t := newKV(w)
		t.add("ID", off.GetId())
		t.add("Name", off.GetName())
		t.add("Organisation", off.GetOrganisationId())
		t.add("Service", off.GetLeikaKey())
		t.add("Areas", strings.Join(off.GetAreas(), ", "))
		t.add("Revision", formatRevision(off.GetRevision(), off.GetUpdatedAtUnixMs(), off.GetUpdatedBy()))
		t.flush()
		fmt.Fprintln(w)
		writeOfferingDetail(&detail{w: w, indent: "  ", width: 14}, off)
		fmt.Fprintln(w)
	})
}
