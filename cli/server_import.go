package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"connectrpc.com/connect"

	"github.com/verbund/verbund/keys"
	nodev1 "github.com/verbund/verbund/proto/gen/verbund/node/v1"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
	"github.com/verbund/verbund/proto/gen/verbund/registry/v1/registryv1connect"
	"github.com/verbund/verbund/sampledata"
)

// importCommand is "verbund import": the sample data into a running network.
func importCommand() Command {
	return Command{
		Name:    "import",
		Summary: "import your own catalogue (DLDB, XZuFi JSON, CSV files), or the embedded sample data, through the signed write path",
		Run:     runImport,
	}
}

func runImport(ctx context.Context, env *Env, args []string) error {
	fs := newFlagSet("import FILE… --as ORG --key KEY [--dry-run] [--delete ID…] [--delete-missing] | import --key FILE --org ID --keys-dir DIR [flags]",
		"With FILE…: import the organisation's own catalogue: DLDB exports (services_de.json\n"+
			"with locations_de.json, any city's), XZuFi-shaped JSON (as verbund export writes it) or\n"+
			"CSV (see the README). Every record is checked (LeiKa key, fields, area, the governance\n"+
			"rules) and reported as new, changed (with the fields), unchanged or refused (and why);\n"+
			"--dry-run stops there. Changes are sent as one signed, conditional command each;\n"+
			"nothing the files omit is deleted unless asked (--delete ID, --delete-missing). Run it\n"+
			"again after an interruption: it sends only what is still missing.\n\n"+
			"Without FILE: import the embedded public sample data through the governance rules: the 16 state\n"+
			"agencies (registered by the network operator, --key), the 294 districts, 1,210\n"+
			"municipal associations and 11,004 municipalities (listed by their state's agency),\n"+
			"Munich's join request (signed by Munich) and its approval by Bayern's agency, the\n"+
			"catalogue (operator), Munich's offerings, and a synthetic shared service centre\n"+
			"authorised by Bayern on behalf of Unterhaching. The sample organisations' signing\n"+
			"keys are kept in --keys-dir (created if missing; keep it for re-runs). Idempotent:\n"+
			"run it again after an interruption and it resumes; applied batches come back as\n"+
			"duplicates. Resume with the same --batch.")
	o := clientFlags(fs, false)
	var keyFile, org, keysDir string
	var batch, parallel int
	var quiet bool
	fs.StringVar(&keyFile, "key", os.Getenv("VERBUND_KEY"), "the operator's private signing JWK `file` (env VERBUND_KEY)")
	fs.StringVar(&org, "org", "", "the operator's organisation `id` (default: the node's organisation)")
	fs.StringVar(&keysDir, "keys-dir", "", "`directory` of the sample organisations' signing keys (<id>.jwk, created if missing)")
	fs.IntVar(&batch, "batch", 500, "mutations per signed command")
	fs.IntVar(&parallel, "parallel", 4, "commands in flight")
	fs.BoolVar(&quiet, "quiet", false, "no progress display")
	var cat catalogueFlags
	cat.register(fs)
	fs.check(func() error {
		if batch < 1 || batch > 1000 {
			return fmt.Errorf("--batch must be 1..1000")
		}
		return nil
	})
	files, err := fs.parse(env, args, 0, -1, "")
	if err != nil {
		return err
	}
	if len(files) > 0 {
		return runCatalogueImport(ctx, env, o, keyFile, &cat, files, min(batch, 100))
	}
	if keyFile == "" {
		return fs.usageErr("--key is required")
	}
	if keysDir == "" {
		return fs.usageErr("--keys-dir is required")
	}
	opKey, err := keys.Load(keyFile)
	if err != nil {
		return err
	}
	if org == "" {
		st, err := o.node().GetStatus(ctx, connect.NewRequest(&nodev1.GetStatusRequest{}))
		if err != nil {
			return o.rpcErr(err)
		}
		org = st.Msg.GetOrganisationId()
	}
	bar := &progressBar{w: env.Stderr, quiet: quiet}
	sum, err := sampledata.Import(ctx, ConnectPublisher{Client: o.publisher(), Timeout: o.timeout}, sampledata.Options{
		OperatorID: org, OperatorKey: opKey, Keys: sampledata.KeyFiles(keysDir),
		Lookup:    connectLookup(o),
		BatchSize: batch, Parallel: parallel, OnProgress: bar.update,
	})
	bar.finish()
	if err != nil {
		return err
	}
	if o.json() {
		fmt.Fprintf(env.Stdout, "{\"records\": %d, \"applied\": %d, \"duplicates\": %d, \"commands\": %d, \"lastIndex\": %d, \"elapsedMs\": %d}\n",
			sum.Records, sum.Applied, sum.Duplicates, sum.Commands, sum.LastIndex, sum.Elapsed.Milliseconds())
		return nil
	}
	tw := newTable(env.Stdout)
	row(tw, "PHASE", "RECORDS", "APPLIED", "DUPLICATES", "COMMANDS")
	for _, p := range sum.Phases {
		row(tw, p.Phase, fmt.Sprint(p.Records), fmt.Sprint(p.Applied), fmt.Sprint(p.Duplicates), fmt.Sprint(p.Commands))
	}
	tw.Flush()
	fmt.Fprintf(env.Stdout, "\n%d records (%d applied, %d already there) in %v, up to Raft index %d\n",
		sum.Records, sum.Applied, sum.Duplicates, sum.Elapsed.Round(time.Millisecond), sum.LastIndex)
	return nil
}

// ConnectPublisher adapts the PublishService client to sampledata.Publisher.
type ConnectPublisher struct {
	Client  registryv1connect.PublishServiceClient
	Timeout time.Duration
}

func (p ConnectPublisher) Publish(ctx context.Context, signed []string) (*registryv1.PublishResponse, error) {
	if p.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, p.Timeout)
		defer cancel()
	}
	res, err := p.Client.Publish(ctx, connect.NewRequest(&registryv1.PublishRequest{SignedCommands: signed}))
	if err != nil {
		return nil, err
	}
	return res.Msg, nil
}

// progressBar draws one line per phase on a terminal-like writer.
type progressBar struct {
	w     io.Writer
	quiet bool
	phase string
	last  time.Time
}

func (b *progressBar) update(p sampledata.Progress) {
	if b.quiet {
		return
	}
	if p.Phase != b.phase && b.phase != "" {
		fmt.Fprintln(b.w)
	}
	if p.Phase == b.phase && p.Done < p.Total && time.Since(b.last) < 100*time.Millisecond {
		return
	}
	b.phase, b.last = p.Phase, time.Now()
	const width = 30
	filled := 0
	if p.Total > 0 {
		filled = p.Done * width / p.Total
	}
	fmt.Fprintf(b.w, "\r%-15s [%s%s] %6d/%-6d dup %-6d %v", p.Phase,
		strings.Repeat("#", filled), strings.Repeat(".", width-filled), p.Done, p.Total, p.Duplicates, p.Elapsed.Round(time.Millisecond))
}

func (b *progressBar) finish() {
	if !b.quiet && b.phase != "" {
		fmt.Fprintln(b.w)
	}
}

// connectLookup reads an organisation through the node's QueryService
// (linearizable), for sampledata.Options.Lookup.
func connectLookup(o *clientOpts) func(ctx context.Context, id string) (*registryv1.Organisation, error) {
	return func(ctx context.Context, id string) (*registryv1.Organisation, error) {
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
}
