package cli

import (
	"context"
	"fmt"
	"io"
	"strings"

	"connectrpc.com/connect"

	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
	"github.com/verbund/verbund/registry"
)

// servicesCommand is "verbund services": the national service catalogue.
func servicesCommand() Command {
	return group("services", "search the national service catalogue (LeiKa)", []subcommand{
		{"search", "full-text search, optionally by life situation", servicesSearch},
		{"get", "show one service", servicesGet},
		{"life-situations", "list the life situations and their number of services", lifeSituations},
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
