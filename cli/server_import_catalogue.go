package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"connectrpc.com/connect"

	"github.com/verbund/verbund/keys"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
	"github.com/verbund/verbund/registry"
	"github.com/verbund/verbund/sampledata/catalogue"
)

// catalogueFlags are the flags of "verbund import FILE…".
type catalogueFlags struct {
	as            string
	areas         listFlag
	del           listFlag
	deleteMissing bool
	dryRun        bool
}

func (c *catalogueFlags) register(fs *flagSet) {
	fs.StringVar(&c.as, "as", os.Getenv("VERBUND_AS"), "with FILE: the importing organisation's `id`; the records become its offerings (env VERBUND_AS)")
	fs.Var(&c.areas, "area", "with FILE: `ARS` prefix for records that name no area (repeatable; default: the organisation's own ARS)")
	fs.Var(&c.del, "delete", "with FILE: offering `id` to delete explicitly (repeatable, or comma-separated)")
	fs.BoolVar(&c.deleteMissing, "delete-missing", false, "with FILE: also delete the organisation's offerings that no record names (default false: omitted offerings stay)")
	fs.BoolVar(&c.dryRun, "dry-run", false, "with FILE: show the difference against the registry and send nothing")
}

// connectCatalogue reads the registry for catalogue.MakePlan through the
// node's QueryService, linearizable.
type connectCatalogue struct{ o *clientOpts }

func (c connectCatalogue) ctx(ctx context.Context) (context.Context, context.CancelFunc) {
	return c.o.context(ctx)
}

var linearizable = &registryv1.ReadOptions{Consistency: registryv1.Consistency_CONSISTENCY_LINEARIZABLE}

func (c connectCatalogue) Organisation(ctx context.Context, id string) (*registryv1.Organisation, error) {
	ctx, cancel := c.ctx(ctx)
	defer cancel()
	return getOrg(ctx, c.o, id)
}

func (c connectCatalogue) Service(ctx context.Context, leika string) (*registryv1.Service, error) {
	ctx, cancel := c.ctx(ctx)
	defer cancel()
	res, err := c.o.query().GetService(ctx, connect.NewRequest(&registryv1.GetServiceRequest{LeikaKey: leika, Read: linearizable}))
	if connect.CodeOf(err) == connect.CodeNotFound {
		return nil, nil
	}
	if err != nil {
		return nil, c.o.rpcErr(err)
	}
	return res.Msg.GetService(), nil
}

func (c connectCatalogue) Offerings(ctx context.Context, org string) ([]*registryv1.Offering, uint64, error) {
	return c.list(ctx, org, "")
}

func (c connectCatalogue) list(ctx context.Context, org, area string) ([]*registryv1.Offering, uint64, error) {
	var out []*registryv1.Offering
	var index uint64
	token := ""
	for {
		cctx, cancel := c.ctx(ctx)
		res, err := c.o.query().ListOfferings(cctx, connect.NewRequest(&registryv1.ListOfferingsRequest{
			OrganisationId: org, Area: area, PageSize: 1000, PageToken: token, Read: linearizable}))
		cancel()
		if err != nil {
			return nil, 0, c.o.rpcErr(err)
		}
		out = append(out, res.Msg.GetOfferings()...)
		index = max(index, res.Msg.GetRead().GetIndex())
		if token = res.Msg.GetNextPageToken(); token == "" {
			return out, index, nil
		}
	}
}

func (c connectCatalogue) Authorisations(ctx context.Context, grantee string) ([]*registryv1.Authorisation, error) {
	var out []*registryv1.Authorisation
	token := ""
	for {
		cctx, cancel := c.ctx(ctx)
		res, err := c.o.query().ListAuthorisations(cctx, connect.NewRequest(&registryv1.ListAuthorisationsRequest{
			GranteeId: grantee, PageSize: 1000, PageToken: token, Read: linearizable}))
		cancel()
		if err != nil {
			return nil, c.o.rpcErr(err)
		}
		out = append(out, res.Msg.GetAuthorisations()...)
		if token = res.Msg.GetNextPageToken(); token == "" {
			return out, nil
		}
	}
}

// publishRetryable reports whether a failed Publish may be sent again:
// the outcome is unknown or the node had no leader; the same command ids
// make a retry safe (the registry answers "duplicate").
func publishRetryable(err error) bool {
	switch connect.CodeOf(err) {
	case connect.CodeUnavailable, connect.CodeDeadlineExceeded, connect.CodeAborted, connect.CodeResourceExhausted, connect.CodeUnknown:
		return true
	}
	return false
}

// runCatalogueImport is "verbund import FILE…": the organisation's own
// catalogue, record by record (see package sampledata/catalogue).
func runCatalogueImport(ctx context.Context, env *Env, o *clientOpts, keyFile string, c *catalogueFlags, files []string, perRequest int) error {
	if c.as == "" {
		return errors.New("--as ORG is required with FILE: the organisation whose catalogue this is")
	}
	if !registry.ValidOrgID(c.as) {
		return fmt.Errorf("--as %q is not an organisation id", c.as)
	}
	if keyFile == "" && !c.dryRun {
		return errors.New("--key is required (the organisation's private signing JWK), except with --dry-run")
	}
	for _, a := range c.areas {
		if !registry.ValidAreaPrefix(a) {
			return fmt.Errorf("--area %q: want an ARS prefix of 2, 3, 5, 9 or 12 digits", a)
		}
	}
	var in []catalogue.File
	for _, f := range files {
		var data []byte
		var err error
		if f == "-" {
			data, err = io.ReadAll(env.stdin())
		} else {
			data, err = os.ReadFile(f)
		}
		if err != nil {
			return err
		}
		in = append(in, catalogue.File{Name: displayName(f), Data: data})
	}
	recs, err := catalogue.Parse(in, catalogue.ParseOptions{Org: c.as, Areas: c.areas})
	if err != nil {
		return err
	}
	plan, err := catalogue.MakePlan(ctx, connectCatalogue{o}, c.as, recs, catalogue.PlanOptions{Delete: c.del, DeleteMissing: c.deleteMissing})
	if err != nil {
		return err
	}
	var rep catalogue.Report
	var applyErr error
	if !c.dryRun {
		key, err := keys.Load(keyFile)
		if err != nil {
			return err
		}
		rep, applyErr = plan.Apply(ctx, ConnectPublisher{Client: o.publisher(), Timeout: o.timeout}, catalogue.ApplyOptions{
			Issuer: c.as, Key: key, PerRequest: perRequest, Retryable: publishRetryable,
		})
	}
	if o.json() {
		writeImportJSON(env.Stdout, plan, rep, c.dryRun)
	} else {
		writeImportReport(env.Stdout, plan, rep, c.dryRun)
	}
	if applyErr != nil {
		return fmt.Errorf("import interrupted after %d applied, %d already applied, %d failed; %d changes not sent (run the same import again to resume): %w",
			rep.Applied, rep.Duplicates, rep.Failed, rep.NotSent, o.rpcErr(applyErr))
	}
	if rep.Failed > 0 {
		return fmt.Errorf("%d of %d changes were refused by the registry", rep.Failed, rep.Sent)
	}
	if len(plan.Entries) > 0 && plan.Count(catalogue.ActionRefused) == len(plan.Entries) {
		return fmt.Errorf("nothing to import: all %d records refused", len(plan.Entries))
	}
	return nil
}

func entryDetail(e *catalogue.Entry) string {
	var parts []string
	switch e.Action {
	case catalogue.ActionChanged:
		parts = append(parts, "fields: "+strings.Join(e.Changed, ", "))
	case catalogue.ActionRefused:
		parts = append(parts, e.Reason.Error())
	}
	if e.Result != "" {
		parts = append(parts, e.Result)
	}
	for _, w := range e.Warnings {
		parts = append(parts, "note: "+w)
	}
	return strings.Join(parts, "; ")
}

func writeImportReport(w io.Writer, p *catalogue.Plan, rep catalogue.Report, dryRun bool) {
	tw := newTable(w)
	row(tw, "ACTION", "KIND", "ID", "SOURCE", "DETAIL")
	for i := range p.Entries {
		e := &p.Entries[i]
		act := string(e.Action)
		if e.Action == catalogue.ActionDelete && !dryRun && e.Applied {
			act = "deleted"
		}
		row(tw, act, e.Kind, e.ID, e.Source, oneLine(entryDetail(e), 0))
	}
	tw.Flush()
	fmt.Fprintf(w, "\n%d entries for %s: %d new, %d changed, %d unchanged, %d refused, %d to delete\n", len(p.Entries), p.Org,
		p.Count(catalogue.ActionNew), p.Count(catalogue.ActionChanged), p.Count(catalogue.ActionUnchanged),
		p.Count(catalogue.ActionRefused), p.Count(catalogue.ActionDelete))
	for _, n := range p.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
	if dryRun {
		fmt.Fprintln(w, "dry run: nothing was sent")
		return
	}
	fmt.Fprintf(w, "applied %d, already applied %d (an earlier run), failed %d, not sent %d", rep.Applied, rep.Duplicates, rep.Failed, rep.NotSent)
	if rep.LastIndex > 0 {
		fmt.Fprintf(w, "; up to index %d (read your writes with --min-index %d)", rep.LastIndex, rep.LastIndex)
	}
	fmt.Fprintln(w)
}

func writeImportJSON(w io.Writer, p *catalogue.Plan, rep catalogue.Report, dryRun bool) {
	type entry struct {
		Action   string   `json:"action"`
		Kind     string   `json:"kind"`
		ID       string   `json:"id"`
		Source   string   `json:"source"`
		Changed  []string `json:"changed,omitempty"`
		Reason   string   `json:"reason,omitempty"`
		Warnings []string `json:"warnings,omitempty"`
		Command  string   `json:"commandId,omitempty"`
		Result   string   `json:"result,omitempty"`
	}
	out := struct {
		Organisation string            `json:"organisation"`
		DryRun       bool              `json:"dryRun"`
		Entries      []entry           `json:"entries"`
		Notes        []string          `json:"notes,omitempty"`
		Report       *catalogue.Report `json:"report,omitempty"`
	}{Organisation: p.Org, DryRun: dryRun, Notes: p.Notes}
	for _, e := range p.Entries {
		x := entry{Action: string(e.Action), Kind: e.Kind, ID: e.ID, Source: e.Source, Changed: e.Changed, Warnings: e.Warnings, Command: e.CommandID, Result: e.Result}
		if e.Reason != nil {
			x.Reason = e.Reason.Error()
		}
		out.Entries = append(out.Entries, x)
	}
	if !dryRun {
		out.Report = &rep
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(out)
}

// exportCommand is "verbund export": offerings as XZuFi-shaped JSON.
func exportCommand() Command {
	return Command{
		Name:    "export",
		Summary: "export an organisation's or a state's offerings as XZuFi-shaped JSON (verbund import reads it back)",
		Run:     runExport,
	}
}

func runExport(ctx context.Context, env *Env, args []string) error {
	fs := newFlagSet("export --org ORG | --state SS [--format xzufi] [-f FILE]",
		"Export offerings with their catalogue entries as XZuFi-shaped JSON (schema "+catalogue.XZuFiSubset+"),\n"+
			"read linearizably. --org: one organisation's offerings; --state: every offering\n"+
			"serving an area of the state (two-digit code, or any ARS prefix). `verbund import FILE\n"+
			"--as ORG` reads the file back (each organisation imports its own offerings).")
	o := clientFlags(fs, false)
	var org, state, format, file string
	fs.StringVar(&org, "org", "", "organisation `id` whose offerings to export")
	fs.StringVar(&state, "state", "", "state `code` (or ARS prefix) whose offerings to export")
	fs.StringVar(&format, "format", "xzufi", "output `format`: xzufi")
	fs.StringVar(&file, "f", "-", "output `file` (- for stdout)")
	fs.check(func() error {
		switch {
		case (org == "") == (state == ""):
			return errors.New("give one of --org and --state")
		case org != "" && !registry.ValidOrgID(org):
			return fmt.Errorf("--org %q is not an organisation id", org)
		case state != "" && (len(state) > 12 || strings.Trim(state, "0123456789") != ""):
			return fmt.Errorf("--state %q: want a two-digit state code or an ARS prefix", state)
		case format != "xzufi":
			return fmt.Errorf("--format %q: only xzufi is supported", format)
		}
		return nil
	})
	if _, err := fs.parse(env, args, 0, 0, ""); err != nil {
		return err
	}
	reg := connectCatalogue{o}
	offs, _, err := reg.list(ctx, org, state)
	if err != nil {
		return err
	}
	services := map[string]*registryv1.Service{}
	for _, of := range offs {
		if _, ok := services[of.GetLeikaKey()]; ok {
			continue
		}
		s, err := reg.Service(ctx, of.GetLeikaKey())
		if err != nil {
			return err
		}
		services[of.GetLeikaKey()] = s
	}
	source := "organisation " + org
	if state != "" {
		source = "area " + state
	}
	doc, err := catalogue.Export(source+", exported "+time.Now().UTC().Format(time.RFC3339), offs, services)
	if err != nil {
		return fmt.Errorf("%s: %w", source, err)
	}
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return err
	}
	b = append(b, '\n')
	if file == "-" {
		_, err = env.Stdout.Write(b)
		return err
	}
	if err := os.WriteFile(file, b, 0o644); err != nil {
		return err
	}
	fmt.Fprintf(env.Stderr, "exported %d offerings of %s to %s\n", len(doc.Leistungen), source, file)
	return nil
}
