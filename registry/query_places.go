package registry

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"fmt"
	"slices"
	"strings"

	"github.com/dgraph-io/badger/v4"
	"google.golang.org/protobuf/proto"

	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
	"github.com/verbund/verbund/registry/textsearch"
)

// Place search: choosing a municipality (or district, association, ...) by
// name or postcode, for autocomplete over the 11,004 municipalities.
//
// The FSM keeps three indexes of every organisation (writeOrg): x/ow/
// <word>\x00<id> for each folded word of its name (textsearch.Fold: case,
// accents and umlauts folded, "Muenchen" = "München" = "munchen"),
// x/pc/<postal code>\x00<id>, and x/oe/<main name>\x00<id> (PlaceName:
// the folded name before the register's designation) for exact matches.
// The value of the first two, placeMeta, holds what the ranking needs
// (kind, state, population), so a query ranks its candidates from the
// index scans alone and loads only the records it returns.

// PlaceIndexLevel is the cluster feature level that brings the place
// index. Below it no replica writes the index (a replica of the previous
// version would not, and every replica's state must be the same); the log
// entry that raises the level builds it for every organisation stored
// (buildPlaceIndex), and from then on writeOrg maintains it. SearchPlaces
// refuses with ErrFeatureLevel below it.
const PlaceIndexLevel uint32 = 2

// buildPlaceIndex writes the place index of every stored organisation:
// deterministic, a function of the state alone, in key order.
func buildPlaceIndex(st *stage) error {
	it := st.txn.NewIterator(badger.IteratorOptions{Prefix: []byte(pOrg), PrefetchValues: true, PrefetchSize: 256})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		o := &registryv1.Organisation{}
		if err := it.Item().Value(func(v []byte) error { return proto.Unmarshal(v, o) }); err != nil {
			return err
		}
		setPlaceKeys(st, o)
	}
	return nil
}

// placeMeta is the value of a place index key: kind (1 byte), state code
// (2 bytes, "  " if none), population (8 bytes big-endian).
func placeMeta(o *registryv1.Organisation) []byte {
	b := make([]byte, 0, 11)
	b = append(b, byte(o.GetKind()))
	st := stateOf(o)
	if len(st) != 2 {
		st = "  "
	}
	b = append(b, st...)
	return binary.BigEndian.AppendUint64(b, uint64(max(o.GetPopulation(), 0)))
}

// placeWords are the distinct folded words of a name: maximal runs of
// letters and digits of textsearch.Fold(name).
func placeWords(name string) []string {
	ws := strings.FieldsFunc(textsearch.Fold(name), func(r rune) bool { return !isPlaceRune(r) })
	slices.Sort(ws)
	return slices.Compact(ws)
}

func isPlaceRune(r rune) bool {
	return ('a' <= r && r <= 'z') || ('0' <= r && r <= '9') || r >= 0x80
}

// PlaceName is the folded main name for exact matches: the name up to its
// first comma (the register appends the designation: "München,
// Landeshauptstadt", "Aachen, Stadt"), its words joined by one space.
func PlaceName(name string) string {
	if i := strings.IndexByte(name, ','); i >= 0 {
		name = name[:i]
	}
	return strings.Join(strings.FieldsFunc(textsearch.Fold(name), func(r rune) bool { return !isPlaceRune(r) }), " ")
}

func setPlaceKeys(st *stage, o *registryv1.Organisation) {
	meta := placeMeta(o)
	if n := PlaceName(o.GetName()); n != "" {
		st.set(placeNameKey(n, o.GetId()), nil)
	}
	for _, w := range placeWords(o.GetName()) {
		st.set(placeWordKey(w, o.GetId()), meta)
	}
	if pc := o.GetPostalCode(); pc != "" {
		st.set(placeCodeKey(pc, o.GetId()), meta)
	}
}

func delPlaceKeys(st *stage, o *registryv1.Organisation) {
	if n := PlaceName(o.GetName()); n != "" {
		st.del(placeNameKey(n, o.GetId()))
	}
	for _, w := range placeWords(o.GetName()) {
		st.del(placeWordKey(w, o.GetId()))
	}
	if pc := o.GetPostalCode(); pc != "" {
		st.del(placeCodeKey(pc, o.GetId()))
	}
}

// maxPlaceScan bounds the index keys one query word may visit (a
// one-letter prefix visits a few thousand).
const maxPlaceScan = 20000

type placeCand struct {
	id      string
	kind    registryv1.OrganisationKind
	state   string
	pop     uint64
	exact   bool
	matched int // query words matched so far
}

// SearchPlaces answers ListOrganisationsRequest.query: organisations whose
// name matches every word of query (each word a prefix of a word of the
// name, folded like the catalogue search) or, for a query of digits, whose
// postal code starts with it. Filters of f (kind, state, ARS prefix) apply;
// the page token does not. Ranked: exact name first, then municipalities,
// then larger population, then name.
func (r *Reader) SearchPlaces(query string, f OrgFilter) ([]*registryv1.Organisation, uint64, error) {
	var err error
	if f.PageSize, err = checkPageSize(f.PageSize); err != nil {
		return nil, 0, err
	}
	if len(query) > MaxNameLen {
		return nil, 0, invalid("query is %d bytes, at most %d", len(query), MaxNameLen)
	}
	if f.StateCode != "" && !reState.MatchString(f.StateCode) {
		return nil, 0, invalid("state code %q must be 2 digits", f.StateCode)
	}
	if f.ARSPrefix != "" && (len(f.ARSPrefix) > 12 || strings.Trim(f.ARSPrefix, "0123456789") != "") {
		return nil, 0, invalid("ARS prefix %q must be up to 12 digits", f.ARSPrefix)
	}
	words := placeWords(query)
	if len(words) == 0 {
		return nil, 0, invalid("query %q has no letters or digits", query)
	}
	if len(words) > 8 {
		words = words[:8]
	}
	postcode := len(words) == 1 && strings.Trim(words[0], "0123456789") == "" && len(words[0]) <= 5
	var out []*registryv1.Organisation
	idx, err := r.view(func(st *stage) error {
		if level, err := featureLevel(st); err != nil {
			return err
		} else if level < PlaceIndexLevel {
			return fmt.Errorf("%w: place search needs cluster feature level %d, the cluster is at %d (a server of an older version is still in the cluster)", ErrFeatureLevel, PlaceIndexLevel, level)
		}
		cands := map[string]*placeCand{}
		scan := func(prefix []byte, round int) {
			it := st.txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: false})
			defer it.Close()
			n := 0
			for it.Rewind(); it.Valid() && n < maxPlaceScan; it.Next() {
				n++
				key := it.Item().Key()
				id := string(key[bytes.LastIndexByte(key, 0)+1:])
				c := cands[id]
				if round == 0 && c == nil {
					c = &placeCand{id: id}
					_ = it.Item().Value(func(v []byte) error {
						if len(v) == 11 {
							c.kind = registryv1.OrganisationKind(v[0])
							c.state = strings.TrimSpace(string(v[1:3]))
							c.pop = binary.BigEndian.Uint64(v[3:])
						}
						return nil
					})
					cands[id] = c
				}
				if c != nil && c.matched == round {
					c.matched++
				}
			}
		}
		if postcode {
			scan([]byte(pPlaceCode+words[0]), 0)
		}
		if !postcode || len(cands) == 0 {
			for i, w := range words {
				scan([]byte(pPlaceWord+w), i)
			}
		}
		// Exact names: the main name (before the designation).
		if n := PlaceName(query); !postcode && n != "" {
			scanKeys(st.txn, placeNameKey(n, ""), func(rest []byte) bool {
				if c := cands[string(rest)]; c != nil {
					c.exact = true
				}
				return true
			})
		}
		var hits []*placeCand
		need := 1
		if !postcode {
			need = len(words)
		}
		for _, c := range cands {
			switch {
			case c.matched < need,
				f.Kind != 0 && c.kind != f.Kind,
				f.StateCode != "" && c.state != f.StateCode,
				f.ARSPrefix != "" && ValidARS(c.id) && !strings.HasPrefix(c.id, f.ARSPrefix):
				continue
			}
			hits = append(hits, c)
		}
		slices.SortFunc(hits, comparePlaces)
		for _, c := range hits {
			if len(out) == f.PageSize {
				break
			}
			o := &registryv1.Organisation{}
			if ok, err := st.getProto(orgKey(c.id), o); err != nil {
				return err
			} else if !ok {
				continue
			}
			if f.ARSPrefix != "" && !strings.HasPrefix(o.GetArs(), f.ARSPrefix) {
				continue
			}
			out = append(out, o)
		}
		return nil
	})
	return out, idx, err
}

func comparePlaces(a, b *placeCand) int {
	if a.exact != b.exact {
		if a.exact {
			return -1
		}
		return 1
	}
	am, bm := a.kind == kindMunicipality, b.kind == kindMunicipality
	if am != bm {
		if am {
			return -1
		}
		return 1
	}
	if c := cmp.Compare(b.pop, a.pop); c != 0 {
		return c
	}
	return strings.Compare(a.id, b.id)
}
