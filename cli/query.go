package cli

import (
	"context"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"
	"time"

	"connectrpc.com/connect"

	nodev1 "github.com/verbund/verbund/proto/gen/verbund/node/v1"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
	"github.com/verbund/verbund/registry"
)

func init() {
	Register(group("orgs", "list and show the organisations of the registry", []subcommand{
		{"list", "list organisations by kind, state, name or ARS", orgsList},
		{"get", "show one organisation", orgsGet},
	}))
	Register(group("services", "search the national service catalogue (LeiKa)", []subcommand{
		{"search", "full-text search, optionally by life situation", servicesSearch},
		{"get", "show one service", servicesGet},
		{"life-situations", "list the life situations and their number of services", lifeSituations},
	}))
	Register(Command{
		Name:    "providers",
		Summary: "who delivers a service to the citizens of an area, best first",
		Run:     providers,
	})
	Register(group("offerings", "show offerings: who delivers a service where and how", []subcommand{
		{"get", "show one offering", offeringsGet},
	}))
	Register(Command{
		Name:    "status",
		Summary: "show the status of a node",
		Run:     status,
	})
}

var reStateCode = regexp.MustCompile(`^\d{2}$`)

const maxPageSize = 1000

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

func servicesSearch(ctx context.Context, env *Env, args []string) error {
	fs := newFlagSet("services search [TEXT...] [flags]", "Search the service catalogue, e.g. \"verbund services search umzug\".")
	o := clientFlags(fs, true)
	var life string
	var limit uint
	fs.StringVar(&life, "life-situation", "", "only services of this life situation (`name`), e.g. Umzug")
	fs.UintVar(&limit, "limit", 0, "at most `n` hits (server default 20, at most 200)")
	pos, err := fs.parse(env, args, 0, -1, "")
	if err != nil {
		return err
	}
	ctx, cancel := o.context(ctx)
	defer cancel()
	resp, err := o.query().SearchServices(ctx, connect.NewRequest(&registryv1.SearchServicesRequest{
		Text: strings.Join(pos, " "), LifeSituation: life, Limit: uint32(min(limit, 1<<31)), Read: o.read(),
	}))
	if err != nil {
		return o.rpcErr(err)
	}
	m := resp.Msg
	return o.emit(env, m, m.GetRead(), func(w io.Writer) {
		if len(m.GetHits()) == 0 {
			fmt.Fprintln(w, "no services found")
			return
		}
		tw := newTable(w)
		row(tw, "LEIKA", "NAME", "LIFE SITUATIONS", "SCORE")
		for _, h := range m.GetHits() {
			s := h.GetService()
			row(tw, s.GetLeikaKey(), oneLine(s.GetName(), 70), oneLine(strings.Join(s.GetLifeSituations(), ", "), 40), fmt.Sprintf("%.2f", h.GetScore()))
		}
		tw.Flush()
		fmt.Fprintln(w)
	})
}

func checkLeiKa(fs *flagSet, s string) error {
	if !registry.ValidLeiKa(s) {
		return fs.usageErr("LeiKa key %q: want 14 digits starting with 99", s)
	}
	return nil
}

func servicesGet(ctx context.Context, env *Env, args []string) error {
	fs := newFlagSet("services get LEIKA [flags]", "Show one service of the catalogue by its 14-digit LeiKa key.")
	o := clientFlags(fs, true)
	pos, err := fs.parse(env, args, 1, 1, "LeiKa key")
	if err != nil {
		return err
	}
	if err := checkLeiKa(fs, pos[0]); err != nil {
		return err
	}
	ctx, cancel := o.context(ctx)
	defer cancel()
	resp, err := o.query().GetService(ctx, connect.NewRequest(&registryv1.GetServiceRequest{LeikaKey: pos[0], Read: o.read()}))
	if err != nil {
		return o.rpcErr(err)
	}
	m := resp.Msg
	return o.emit(env, m, m.GetRead(), func(w io.Writer) {
		s := m.GetService()
		t := newKV(w)
		t.add("LeiKa", s.GetLeikaKey())
		t.add("Name", s.GetName())
		t.add("Life situations", strings.Join(s.GetLifeSituations(), ", "))
		t.add("Keywords", strings.Join(s.GetKeywords(), ", "))
		t.add("Revision", formatRevision(s.GetRevision(), s.GetUpdatedAtUnixMs(), s.GetUpdatedBy()))
		t.flush()
		if d := s.GetDescription(); strings.TrimSpace(d) != "" {
			fmt.Fprintln(w)
			for _, l := range wrap(d, 76) {
				fmt.Fprintln(w, "  "+l)
			}
		}
		fmt.Fprintln(w)
	})
}

func lifeSituations(ctx context.Context, env *Env, args []string) error {
	fs := newFlagSet("services life-situations [flags]", "List the life situations of the catalogue with their number of services.")
	o := clientFlags(fs, true)
	if _, err := fs.parse(env, args, 0, 0, ""); err != nil {
		return err
	}
	ctx, cancel := o.context(ctx)
	defer cancel()
	resp, err := o.query().ListLifeSituations(ctx, connect.NewRequest(&registryv1.ListLifeSituationsRequest{Read: o.read()}))
	if err != nil {
		return o.rpcErr(err)
	}
	m := resp.Msg
	return o.emit(env, m, m.GetRead(), func(w io.Writer) {
		if len(m.GetLifeSituations()) == 0 {
			fmt.Fprintln(w, "no life situations found")
			return
		}
		tw := newTable(w)
		row(tw, "LIFE SITUATION", "SERVICES")
		for _, l := range m.GetLifeSituations() {
			row(tw, l.GetName(), fmt.Sprintf("%d", l.GetServiceCount()))
		}
		tw.Flush()
		fmt.Fprintln(w)
	})
}

const providersSynopsis = "providers --service LEIKA --area ARS|AGS [flags]"

func providers(ctx context.Context, env *Env, args []string) error {
	fs := newFlagSet(providersSynopsis,
		"Find who delivers a service to the citizens of an area, best first: own\n"+
			"municipality, then shared service centres and neighbours, district, state.")
	o := clientFlags(fs, true)
	var service, area string
	var limit uint
	fs.StringVar(&service, "service", "", "14-digit LeiKa `key` of the service")
	fs.StringVar(&area, "area", "", "the citizen's area: 12-digit `ARS` or 8-digit AGS")
	fs.UintVar(&limit, "limit", 0, "at most `n` providers (server default 10, at most 100)")
	fs.check(func() error {
		switch {
		case service == "":
			return fmt.Errorf("--service is required")
		case !registry.ValidLeiKa(service):
			return fmt.Errorf("--service %q: want a 14-digit LeiKa key starting with 99", service)
		case area == "":
			return fmt.Errorf("--area is required")
		case !registry.ValidARS(area) && !registry.ValidAGS(area):
			return fmt.Errorf("--area %q: want a 12-digit ARS or an 8-digit AGS", area)
		}
		return nil
	})
	if _, err := fs.parse(env, args, 0, 0, ""); err != nil {
		return err
	}
	ctx, cancel := o.context(ctx)
	defer cancel()
	resp, err := o.query().FindProviders(ctx, connect.NewRequest(&registryv1.FindProvidersRequest{
		LeikaKey: service, Area: area, Limit: uint32(min(limit, 1<<31)), Read: o.read(),
	}))
	if err != nil {
		return o.rpcErr(err)
	}
	m := resp.Msg
	return o.emit(env, m, m.GetRead(), func(w io.Writer) { writeProviders(w, m, service, area) })
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

const statusSynopsis = "status [flags]"

func status(ctx context.Context, env *Env, args []string) error {
	fs := newFlagSet(statusSynopsis, "Show the status of the node at --addr: Raft state, leader, applied index.")
	o := clientFlags(fs, false)
	if _, err := fs.parse(env, args, 0, 0, ""); err != nil {
		return err
	}
	ctx, cancel := o.context(ctx)
	defer cancel()
	resp, err := o.node().GetStatus(ctx, connect.NewRequest(&nodev1.GetStatusRequest{}))
	if err != nil {
		return o.rpcErr(err)
	}
	m := resp.Msg
	return o.emit(env, m, nil, func(w io.Writer) {
		t := newKV(w)
		t.add("Node", m.GetNodeId())
		t.add("Organisation", m.GetOrganisationId())
		t.add("Raft state", m.GetRaftState())
		leader := m.GetLeaderId()
		if a := m.GetLeaderAddress(); a != "" {
			leader = strings.TrimSpace(leader + " at " + a)
		}
		t.add("Leader", leader)
		t.add("Applied index", fmt.Sprintf("%d", m.GetAppliedIndex()))
		t.add("Commit index", fmt.Sprintf("%d", m.GetCommitIndex()))
		t.add("Version", m.GetVersion())
		if ms := m.GetStartedAtUnixMs(); ms > 0 {
			up := time.Since(time.UnixMilli(ms)).Round(time.Second)
			t.add("Started", fmt.Sprintf("%s (up %s)", formatTime(ms), up))
		}
		t.flush()
		if len(m.GetStats()) > 0 {
			fmt.Fprintln(w, "\nStats:")
			tw := newTable(w)
			keys := make([]string, 0, len(m.GetStats()))
			for k := range m.GetStats() {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			for _, k := range keys {
				row(tw, "  "+k, m.GetStats()[k])
			}
			tw.Flush()
		}
	})
}
