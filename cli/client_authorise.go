package cli

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"

	"connectrpc.com/connect"

	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
	"github.com/verbund/verbund/registry"
)

// authoriseCommand is "verbund authorise": signed, withdrawable
// authorisations by an area's responsible body.
func authoriseCommand() Command {
	return group("authorise", "entitle another organisation to offer services for your area, withdraw it, list authorisations", []subcommand{
		{"grant", "authorise an organisation to serve areas of yours (or of a municipality that has not joined)", authoriseGrant},
		{"withdraw", "withdraw an authorisation: its offerings leave every answer at once", authoriseWithdraw},
		{"list", "list authorisations by grantor, grantee or area", authoriseList},
	})
}

var (
	reHex64  = regexp.MustCompile(`^[0-9a-fA-F]{64}$`)
	reAuthID = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9:._-]{2,127}$`)
)

// listFlag is a repeatable flag; each value may also be a comma-separated list.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

// defaultAuthID is "<grantor>:<grantee>:<12 hex of the grant's content>".
func defaultAuthID(a *registryv1.Authorisation) string {
	h := sha256.New()
	for _, s := range [][]string{a.GetAreas(), a.GetLeikaKeys(), {a.GetOnBehalfOf()}} {
		h.Write([]byte(strings.Join(s, ",")))
		h.Write([]byte{0})
	}
	return a.GetGrantorId() + ":" + a.GetGranteeId() + ":" + hex.EncodeToString(h.Sum(nil))[:12]
}

func authoriseGrant(ctx context.Context, env *Env, args []string) error {
	fs := newFlagSet("authorise grant --to ORG --area ARS... [--service LEIKA...] [--on-behalf-of ARS] --key FILE --as GRANTOR [flags]",
		"Entitle organisation --to (a neighbour, association or shared service centre) to offer\n"+
			"services for the areas --area (ARS prefixes within your own area), for the services\n"+
			"--service (LeiKa keys; none: every service). A district or state agency may grant on\n"+
			"behalf of a municipality that has not joined (--on-behalf-of its ARS; every area\n"+
			"within it); the municipality takes the grant over when it joins. The registry refuses\n"+
			"a grant outside the grantor's responsibility, naming the rule.")
	o := clientFlags(fs, false)
	var s signerFlags
	s.register(fs, "grantor")
	var areas, services listFlag
	var to, behalf, id, note string
	fs.StringVar(&to, "to", "", "the grantee's organisation `id`")
	fs.Var(&areas, "area", "`ARS` prefix (2, 3, 5, 9 or 12 digits) the grant covers; repeat or comma-separate")
	fs.Var(&services, "service", "LeiKa `key` the grant covers; repeat or comma-separate (none: every service)")
	fs.StringVar(&behalf, "on-behalf-of", "", "12-digit `ARS` of the municipality (not joined) this grant is made for")
	fs.StringVar(&id, "id", "", "authorisation `id` (default: <grantor>:<grantee>:<digest of the grant>)")
	fs.StringVar(&note, "note", "", "free `text` recorded with the grant")
	fs.check(func() error {
		switch {
		case to == "":
			return errors.New("--to is required")
		case !registry.ValidOrgID(to):
			return fmt.Errorf("--to %q is not an organisation id", to)
		case len(areas) == 0:
			return errors.New("--area is required")
		case behalf != "" && !registry.ValidARS(behalf):
			return fmt.Errorf("--on-behalf-of %q: want a 12-digit ARS", behalf)
		case id != "" && !reAuthID.MatchString(id):
			return fmt.Errorf("--id %q: want 3-128 of [A-Za-z0-9:._-]", id)
		}
		for _, a := range areas {
			if !registry.ValidAreaPrefix(a) {
				return fmt.Errorf("--area %q: want an ARS prefix of 2, 3, 5, 9 or 12 digits", a)
			}
		}
		for _, l := range services {
			if !registry.ValidLeiKa(l) {
				return fmt.Errorf("--service %q: want a 14-digit LeiKa key starting with 99", l)
			}
		}
		return nil
	})
	if _, err := fs.parse(env, args, 0, 0, ""); err != nil {
		return err
	}
	key, err := s.load()
	if err != nil {
		return err
	}
	a := &registryv1.Authorisation{
		GrantorId: s.as, GranteeId: to, Areas: areas, LeikaKeys: services, OnBehalfOf: behalf, Note: note,
	}
	a.Id = id
	if a.Id == "" {
		a.Id = defaultAuthID(a)
	}
	ctx, cancel := o.context(ctx)
	defer cancel()
	r, err := s.publish(ctx, o, registry.NewCommand(s.as, &registryv1.Mutation{Op: &registryv1.Mutation_PutAuthorisation{PutAuthorisation: a}}), key)
	if err != nil {
		return err
	}
	return o.emit(env, r, nil, func(w io.Writer) {
		svc := "every service"
		if len(services) > 0 {
			svc = strings.Join(services, ", ")
		}
		fmt.Fprintf(w, "granted %s: %s may serve %s for %s", a.GetId(), to, strings.Join(areas, ", "), svc)
		if behalf != "" {
			fmt.Fprintf(w, " (on behalf of %s)", behalf)
		}
		fmt.Fprintf(w, ", signed by %s, at index %d\n", s.as, r.GetIndex())
	})
}

func authoriseWithdraw(ctx context.Context, env *Env, args []string) error {
	fs := newFlagSet("authorise withdraw ID --key FILE --as ORG [flags]",
		"Withdraw authorisation ID, as its grantor, as the municipality it was granted for (once\n"+
			"it has joined), or as the grantor's approver. Every offering it entitled leaves the\n"+
			"provider answers of every node at the same Raft index.")
	o := clientFlags(fs, false)
	var s signerFlags
	s.register(fs, "withdrawing organisation")
	pos, err := fs.parse(env, args, 1, 1, "authorisation ID")
	if err != nil {
		return err
	}
	key, err := s.load()
	if err != nil {
		return err
	}
	ctx, cancel := o.context(ctx)
	defer cancel()
	r, err := s.publish(ctx, o, registry.NewCommand(s.as, &registryv1.Mutation{Op: &registryv1.Mutation_WithdrawAuthorisation{WithdrawAuthorisation: pos[0]}}), key)
	if err != nil {
		return err
	}
	return o.emit(env, r, nil, func(w io.Writer) {
		fmt.Fprintf(w, "withdrew %s, signed by %s, at index %d\n", pos[0], s.as, r.GetIndex())
	})
}

func authoriseList(ctx context.Context, env *Env, args []string) error {
	fs := newFlagSet("authorise list [--grantor ORG] [--grantee ORG] [--area ARS] [flags]",
		"List the authorisations granted by --grantor, received by --grantee, or covering --area.")
	o := clientFlags(fs, true)
	var grantor, grantee, area string
	fs.StringVar(&grantor, "grantor", "", "granting organisation `id`")
	fs.StringVar(&grantee, "grantee", "", "entitled organisation `id`")
	fs.StringVar(&area, "area", "", "`ARS` (or prefix) the authorisations cover")
	limit, all := pagingFlags(fs, "authorisations")
	fs.check(func() error {
		if grantor == "" && grantee == "" && area == "" {
			return errors.New("give --grantor, --grantee or --area")
		}
		return nil
	})
	if _, err := fs.parse(env, args, 0, 0, ""); err != nil {
		return err
	}
	ctx, cancel := o.context(ctx)
	defer cancel()
	q := o.query()
	out := &registryv1.ListAuthorisationsResponse{}
	var err error
	out.Authorisations, out.NextPageToken, err = collect(int(*limit), *all, func(size int32, token string) ([]*registryv1.Authorisation, string, error) {
		resp, err := q.ListAuthorisations(ctx, connect.NewRequest(&registryv1.ListAuthorisationsRequest{
			GrantorId: grantor, GranteeId: grantee, Area: area, Read: o.read(), PageSize: uint32(size), PageToken: token,
		}))
		if err != nil {
			return nil, "", o.rpcErr(err)
		}
		out.Read = resp.Msg.GetRead()
		return resp.Msg.GetAuthorisations(), resp.Msg.GetNextPageToken(), nil
	})
	if err != nil {
		return err
	}
	return o.emit(env, out, out.GetRead(), func(w io.Writer) {
		if len(out.Authorisations) == 0 {
			fmt.Fprintln(w, "no authorisations found")
			return
		}
		tw := newTable(w)
		row(tw, "ID", "GRANTOR", "GRANTEE", "AREAS", "SERVICES", "ON BEHALF OF", "NOTE")
		for _, a := range out.Authorisations {
			svc := strings.Join(a.GetLeikaKeys(), ",")
			if svc == "" {
				svc = "all"
			}
			row(tw, a.GetId(), a.GetGrantorId(), a.GetGranteeId(), strings.Join(a.GetAreas(), ","), svc, a.GetOnBehalfOf(), oneLine(a.GetNote(), 60))
		}
		tw.Flush()
		countLine(w, len(out.Authorisations), "authorisation", "authorisations", out.NextPageToken != "")
	})
}
