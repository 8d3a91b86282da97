package registry

import (
	"slices"
	"strings"

	"github.com/dgraph-io/badger/v4"
	"google.golang.org/protobuf/proto"

	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
)

// CoverageRow is one municipality of a coverage answer.
type CoverageRow struct {
	Municipality *registryv1.Organisation
	// Best is the provider FindProviders ranks first; nil if nobody
	// serves the municipality.
	Best *registryv1.Provider
}

// Coverage is the answer to Coverage.
type Coverage struct {
	Service *registryv1.Service
	Rows    []CoverageRow
	// Covered: municipalities with a provider; Online: those whose best
	// provider offers an online channel.
	Covered, Online int
	Index           uint64
}

// Coverage answers "which municipalities of state have a provider for
// service leika": every organisation of kind MUNICIPALITY with that state
// code, in ARS order, with the provider FindProviders would rank first for
// it (unincorporated areas without inhabitants are left out, see
// uninhabitedArea). It reads the service's provider index once for all
// municipalities.
func (r *Reader) Coverage(leika, state string) (*Coverage, error) {
	if !ValidLeiKa(leika) {
		return nil, invalid("LeiKa key %q must match ^99\\d{12}$", leika)
	}
	if !reState.MatchString(state) {
		return nil, invalid("state code %q must be 2 digits", state)
	}
	res := &Coverage{}
	idx, err := r.view(func(st *stage) error {
		svc, err := loadService(st, leika)
		if err != nil {
			return err
		}
		res.Service = svc
		// The provider index of the service, by area prefix.
		byArea := map[string][]string{}
		scanKeys(st.txn, k(pProvider, leika, "/"), func(rest []byte) bool {
			s := string(rest)
			if i := strings.IndexByte(s, '/'); i >= 0 {
				byArea[s[:i]] = append(byArea[s[:i]], s[i+1:])
			}
			return true
		})
		idsAt := func(prefix string) []string { return byArea[prefix] }
		offs := map[string]*registryv1.Offering{}
		orgs := map[string]*registryv1.Organisation{}
		// Municipalities: listed under their ARS, which starts with the
		// state code; the record's state_code decides.
		it := st.txn.NewIterator(badger.IteratorOptions{Prefix: orgKey(state), PrefetchValues: true, PrefetchSize: 256})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			o := &registryv1.Organisation{}
			if err := it.Item().Value(func(v []byte) error { return proto.Unmarshal(v, o) }); err != nil {
				return err
			}
			if o.GetKind() != kindMunicipality || o.GetStateCode() != state || !ValidARS(o.GetArs()) || uninhabitedArea(o) {
				continue
			}
			row := CoverageRow{Municipality: o}
			if len(byArea) > 0 {
				ps, err := providerCandidates(st, o.GetArs(), o, idsAt, offs, orgs)
				if err != nil {
					return err
				}
				if len(ps) > 0 {
					row.Best = slices.MinFunc(ps, compareProviders)
					row.Best.Rank = 1
				}
			}
			if row.Best != nil {
				res.Covered++
				if offersOnline(row.Best.GetOffering()) {
					res.Online++
				}
			}
			res.Rows = append(res.Rows, row)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	res.Index = idx
	return res, nil
}

// uninhabitedArea reports whether o is an unincorporated area without
// inhabitants (gemeindefreies Gebiet: a forest, lake or military training
// area; its ARS has a 9 where the municipal association begins, and the
// register gives it no population). The register lists 208 of them among
// its 11,004 entries (174 in Bayern); nobody there needs a service, so
// coverage leaves them out. Inhabited ones (Lohheide, Osterheide) stay.
func uninhabitedArea(o *registryv1.Organisation) bool {
	return o.GetPopulation() == 0 && len(o.GetArs()) == 12 && o.GetArs()[5] == '9'
}

// offersOnline reports whether an offering has an online channel.
func offersOnline(o *registryv1.Offering) bool {
	for _, c := range o.GetChannels() {
		if c.GetKind() == registryv1.ChannelKind_CHANNEL_KIND_ONLINE {
			return true
		}
	}
	return false
}

// ChannelKinds returns the distinct channel kinds of an offering, in the
// order they first appear.
func ChannelKinds(o *registryv1.Offering) []registryv1.ChannelKind {
	var out []registryv1.ChannelKind
	for _, c := range o.GetChannels() {
		if !slices.Contains(out, c.GetKind()) {
			out = append(out, c.GetKind())
		}
	}
	return out
}
