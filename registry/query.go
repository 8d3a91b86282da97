package registry

import (
	"bytes"
	"cmp"
	"encoding/base64"
	"fmt"
	"math"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/dgraph-io/badger/v4"
	"google.golang.org/protobuf/proto"

	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
	"github.com/verbund/verbund/registry/textsearch"
)

// Reader answers queries from a registry state in badger: the FSM's own
// database on a Raft server, or a member's read copy. Every answer comes
// from one MVCC snapshot and carries the applied index it reflects.
type Reader struct{ db *badger.DB }

// NewReader returns a Reader over db.
func NewReader(db *badger.DB) *Reader { return &Reader{db: db} }

// view runs fn in a read transaction and returns the applied index of the
// snapshot it saw.
func (r *Reader) view(fn func(st *stage) error) (uint64, error) {
	var index uint64
	err := r.db.View(func(txn *badger.Txn) error {
		st := newStage(nil, txn)
		var err error
		if index, err = st.getIndex(keyApplied); err != nil {
			return err
		}
		return fn(st)
	})
	return index, err
}

// Organisation returns one organisation.
func (r *Reader) Organisation(id string) (*registryv1.Organisation, uint64, error) {
	if !ValidOrgID(id) {
		return nil, 0, invalid("organisation id %q must be a 12-digit ARS or a slug", id)
	}
	o := &registryv1.Organisation{}
	idx, err := r.view(func(st *stage) error {
		ok, err := st.getProto(orgKey(id), o)
		if err == nil && !ok {
			err = fmt.Errorf("%w: organisation %s", ErrNotFound, id)
		}
		return err
	})
	if err != nil {
		return nil, idx, err
	}
	return o, idx, nil
}

// Operator returns the id of the network operator ("" before genesis).
func (r *Reader) Operator() (string, error) {
	var op []byte
	_, err := r.view(func(st *stage) (err error) { op, err = st.get([]byte(keyOperator)); return })
	return string(op), err
}

// OrgFilter selects organisations for ListOrganisations.
type OrgFilter struct {
	Kind       registryv1.OrganisationKind
	StateCode  string
	NamePrefix string
	ARSPrefix  string
	PageSize   int
	PageToken  string
}

// ListOrganisations lists organisations in id order (name order with a name
// prefix), filtered, one page at a time.
func (r *Reader) ListOrganisations(f OrgFilter) ([]*registryv1.Organisation, string, uint64, error) {
	var err error
	if f.PageSize, err = checkPageSize(f.PageSize); err != nil {
		return nil, "", 0, err
	}
	if f.StateCode != "" && !reState.MatchString(f.StateCode) {
		return nil, "", 0, invalid("state code %q must be 2 digits", f.StateCode)
	}
	if f.ARSPrefix != "" && (len(f.ARSPrefix) > 12 || strings.Trim(f.ARSPrefix, "0123456789") != "") {
		return nil, "", 0, invalid("ARS prefix %q must be up to 12 digits", f.ARSPrefix)
	}
	var start []byte
	if f.PageToken != "" {
		b, err := base64.RawURLEncoding.DecodeString(f.PageToken)
		if err != nil || len(b) > 512 {
			return nil, "", 0, invalid("bad page token")
		}
		start = b
	}
	byName := f.NamePrefix != ""
	prefix := []byte(pOrg)
	if byName {
		prefix = []byte(pOrgName + textsearch.Fold(f.NamePrefix))
	}
	if start != nil && !bytes.HasPrefix(start, prefix) {
		return nil, "", 0, invalid("page token does not belong to this query")
	}
	var out []*registryv1.Organisation
	var next string
	idx, err := r.view(func(st *stage) error {
		it := st.txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: !byName})
		defer it.Close()
		if start == nil {
			it.Rewind()
		} else {
			it.Seek(start)
		}
		for ; it.Valid(); it.Next() {
			key := it.Item().Key()
			if len(out) == f.PageSize {
				next = base64.RawURLEncoding.EncodeToString(it.Item().KeyCopy(nil))
				return nil
			}
			o := &registryv1.Organisation{}
			if byName {
				id := key[bytes.LastIndexByte(key, 0)+1:]
				if ok, err := st.getProto(orgKey(string(id)), o); err != nil || !ok {
					continue
				}
			} else if err := it.Item().Value(func(v []byte) error { return proto.Unmarshal(v, o) }); err != nil {
				return err
			}
			if f.Kind != 0 && o.GetKind() != f.Kind {
				continue
			}
			if f.StateCode != "" && o.GetStateCode() != f.StateCode {
				continue
			}
			if f.ARSPrefix != "" && !strings.HasPrefix(o.GetArs(), f.ARSPrefix) {
				continue
			}
			out = append(out, o)
		}
		return nil
	})
	return out, next, idx, err
}

// Service returns one catalogue entry.
func (r *Reader) Service(leika string) (*registryv1.Service, uint64, error) {
	if !ValidLeiKa(leika) {
		return nil, 0, invalid("LeiKa key %q must match ^99\\d{12}$", leika)
	}
	var s *registryv1.Service
	idx, err := r.view(func(st *stage) (err error) {
		s, err = loadService(st, leika)
		return err
	})
	if err != nil {
		return nil, idx, err
	}
	return s, idx, nil
}

// loadService reads catalogue entry leika (ErrNotFound if there is none).
func loadService(st *stage, leika string) (*registryv1.Service, error) {
	s := &registryv1.Service{}
	ok, err := st.getProto(serviceKey(leika), s)
	if err == nil && !ok {
		err = fmt.Errorf("%w: service %s", ErrNotFound, leika)
	}
	if err != nil {
		return nil, err
	}
	return s, nil
}

// Offering returns one offering.
func (r *Reader) Offering(id string) (*registryv1.Offering, uint64, error) {
	if !reOffering.MatchString(id) {
		return nil, 0, invalid("offering id %q is invalid", id)
	}
	o := &registryv1.Offering{}
	idx, err := r.view(func(st *stage) error {
		ok, err := st.getProto(offeringKey(id), o)
		if err == nil && !ok {
			err = fmt.Errorf("%w: offering %s", ErrNotFound, id)
		}
		return err
	})
	if err != nil {
		return nil, idx, err
	}
	return o, idx, nil
}

// AuditHead returns the published audit chain head of an organisation.
func (r *Reader) AuditHead(org string) (*registryv1.AuditHead, uint64, error) {
	h := &registryv1.AuditHead{}
	idx, err := r.view(func(st *stage) error {
		ok, err := st.getProto(auditKey(org), h)
		if err == nil && !ok {
			err = fmt.Errorf("%w: no audit head for %s", ErrNotFound, org)
		}
		return err
	})
	if err != nil {
		return nil, idx, err
	}
	return h, idx, nil
}

// ServiceHit is a search result.
type ServiceHit struct {
	Service *registryv1.Service
	Score   float64
	// Distinction is set when other hits share the service's name: what
	// tells this one apart (see distinguish).
	Distinction string
}

// SearchResult is the answer to Search.
type SearchResult struct {
	Hits []ServiceHit
	// ValidLifeSituations is set (and Hits empty) when the requested life
	// situation is unknown.
	ValidLifeSituations []LifeSituation
	Index               uint64
}

// SearchServices is Search without the list of valid life situations.
func (r *Reader) SearchServices(text, lifeSituation string, limit int) ([]ServiceHit, uint64, error) {
	res, err := r.Search(text, lifeSituation, limit)
	if err != nil {
		return nil, res.Index, err
	}
	return res.Hits, res.Index, nil
}

// Search runs a German full-text search over the catalogue: each query
// term is looked up as a prefix of the stored terms, so inflections and
// compounds match ("anmelden" finds "Anmeldung", "hund" "Hundesteuer").
// Every query term must match (several words narrow the result: "Kfz
// zulassen" needs both), and with several terms at least one must match
// the name, keywords or life situations, not only the description. With a life situation (case- and
// umlaut-insensitive), only services tagged with it are returned, and an
// empty text lists them all; an unknown life situation returns no hits and
// the valid ones. Hits that share a name carry a Distinction.
func (r *Reader) Search(text, lifeSituation string, limit int) (*SearchResult, error) {
	res := &SearchResult{}
	if limit <= 0 {
		limit = 20
	}
	if limit > 200 {
		return res, invalid("limit %d exceeds 200", limit)
	}
	if len(text) > 1000 || len(lifeSituation) > 200 {
		return res, fmt.Errorf("%w: query text too long", ErrTooLarge)
	}
	terms := textsearch.QueryTerms(text)
	if len(terms) > 16 {
		terms = terms[:16]
	}
	lifeSituation = strings.TrimSpace(lifeSituation)
	if len(terms) == 0 && lifeSituation == "" {
		return res, invalid("give a search text or a life situation")
	}
	var hits []ServiceHit
	idx, err := r.view(func(st *stage) error {
		var allowed map[string]bool
		if lifeSituation != "" {
			allowed = map[string]bool{}
			scanKeys(st.txn, lifePrefix(textsearch.Fold(lifeSituation)), func(rest []byte) bool {
				allowed[string(rest)] = true
				return true
			})
			if len(allowed) == 0 { // unknown, or no service left in it
				var err error
				res.ValidLifeSituations, err = lifeSituations(st)
				return err
			}
		}
		matches := map[string][]textsearch.TermMatch{}
		if len(terms) == 0 {
			for leika := range allowed {
				matches[leika] = nil
			}
		}
		for i, q := range terms {
			n := 0
			it := st.txn.NewIterator(badger.IteratorOptions{Prefix: []byte(pSearch + q), PrefetchValues: false})
			for it.Rewind(); it.Valid() && n < 50000; it.Next() {
				n++
				key := it.Item().Key()[len(pSearch):]
				slash := bytes.LastIndexByte(key, '/')
				term, leika := string(key[:slash]), string(key[slash+1:])
				if allowed != nil && !allowed[leika] {
					continue
				}
				m := matches[leika]
				if m == nil {
					if i > 0 {
						continue // missed an earlier term: cannot match all
					}
					m = make([]textsearch.TermMatch, len(terms))
					matches[leika] = m
				}
				var fields textsearch.Fields
				_ = it.Item().Value(func(v []byte) error {
					if len(v) == 1 {
						fields = textsearch.Fields(v[0])
					}
					return nil
				})
				m[i].Add(q, term, fields)
			}
			it.Close()
		}
	docs:
		for leika, m := range matches {
			score := 1.0
			if len(terms) > 0 {
				outside := false // some term matched beyond the description
				for _, tm := range m {
					if !tm.Matched() {
						continue docs // every term must match
					}
					outside = outside || (tm.Exact|tm.Prefix)&^textsearch.FieldDescription != 0
				}
				if len(terms) > 1 && !outside {
					// Several words that all occur only in the running
					// text: the service merely mentions them ("Wohnsitz
					// abmelden" names the "Kfz-Zulassungsbehörde").
					continue
				}
				score = textsearch.Score(m)
			}
			if score <= 0 {
				continue
			}
			hits = append(hits, ServiceHit{Service: &registryv1.Service{LeikaKey: leika}, Score: score})
		}
		slices.SortFunc(hits, func(a, b ServiceHit) int {
			if c := cmp.Compare(b.Score, a.Score); c != 0 {
				return c
			}
			return strings.Compare(a.Service.LeikaKey, b.Service.LeikaKey)
		})
		if len(hits) > limit {
			hits = hits[:limit]
		}
		for i := range hits {
			s := &registryv1.Service{}
			if _, err := st.getProto(serviceKey(hits[i].Service.LeikaKey), s); err != nil {
				return err
			}
			hits[i].Service = s
		}
		distinguish(hits)
		return nil
	})
	res.Hits, res.Index = hits, idx
	return res, err
}

// maxDistinction bounds a distinction taken from a description.
const maxDistinction = 120

// distinguish sets Distinction on hits that share a (folded) name with
// another hit: the keywords only some of the group carry (what the
// catalogue says about this variant), else the start of its description
// if the descriptions differ, else, as a last resort, the LeiKa key (the
// catalogue has nothing else that tells them apart).
func distinguish(hits []ServiceHit) {
	groups := map[string][]int{}
	for i, h := range hits {
		n := textsearch.Fold(h.Service.GetName())
		groups[n] = append(groups[n], i)
	}
	for _, g := range groups {
		if len(g) < 2 {
			continue
		}
		// How many members of the group carry each keyword.
		count := map[string]int{}
		for _, i := range g {
			seen := map[string]bool{}
			for _, kw := range hits[i].Service.GetKeywords() {
				if f := textsearch.Fold(kw); !seen[f] {
					seen[f] = true
					count[f]++
				}
			}
		}
		descs := map[string]int{}
		for _, i := range g {
			descs[textsearch.Fold(hits[i].Service.GetDescription())]++
		}
		for _, i := range g {
			s := hits[i].Service
			var own []string
			for _, kw := range s.GetKeywords() {
				if count[textsearch.Fold(kw)] < len(g) && len(own) < 3 && !slices.Contains(own, kw) {
					own = append(own, kw)
				}
			}
			switch {
			case len(own) > 0:
				hits[i].Distinction = "Stichworte: " + strings.Join(own, ", ")
			case descs[textsearch.Fold(s.GetDescription())] == 1 && s.GetDescription() != "":
				hits[i].Distinction = clip(s.GetDescription(), maxDistinction)
			default:
				hits[i].Distinction = "LeiKa-Schlüssel " + s.GetLeikaKey()
			}
		}
	}
}

// clip cuts s to at most n bytes at a word boundary, marking the cut.
func clip(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) <= n {
		return s
	}
	cut := strings.LastIndexByte(s[:n], ' ')
	if cut <= 0 {
		cut = n
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
	}
	return s[:cut] + " …"
}

// scanKeys calls fn with the remainder of every key under prefix.
func scanKeys(txn *badger.Txn, prefix []byte, fn func(rest []byte) bool) {
	it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		if !fn(it.Item().Key()[len(prefix):]) {
			return
		}
	}
}

// LifeSituation is a life situation with the number of services tagged.
type LifeSituation struct {
	Name     string
	Services int
}

// LifeSituations lists the life situations in use.
func (r *Reader) LifeSituations() ([]LifeSituation, uint64, error) {
	var out []LifeSituation
	idx, err := r.view(func(st *stage) (err error) {
		out, err = lifeSituations(st)
		return err
	})
	return out, idx, err
}

func lifeSituations(st *stage) ([]LifeSituation, error) {
	var out []LifeSituation
	it := st.txn.NewIterator(badger.IteratorOptions{Prefix: []byte(pLifeName)})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		folded := string(it.Item().Key()[len(pLifeName):])
		name, err := it.Item().ValueCopy(nil)
		if err != nil {
			return nil, err
		}
		n := 0
		scanKeys(st.txn, lifePrefix(folded), func([]byte) bool { n++; return true })
		if n > 0 {
			out = append(out, LifeSituation{Name: string(name), Services: n})
		}
	}
	return out, nil
}

// Providers is the answer to FindProviders.
type Providers struct {
	Service  *registryv1.Service
	Area     *registryv1.Organisation // the citizen's municipality, if known
	AreaARS  string
	Matches  []*registryv1.Provider
	ReadFrom uint64
}

// areaLevels are the ARS prefix lengths from the most to the least specific.
var areaLevels = []int{12, 9, 5, 3, 2}

// FindProviders answers "who delivers service leika to a citizen of area",
// best first: the citizen's own municipality, then a shared service centre,
// association or neighbour serving the area, then the district, then state
// level. Within a level, more specific area matches come first, then
// providers with a 24/7 online channel, then the nearest.
func (r *Reader) FindProviders(leika, area string, limit int) (*Providers, error) {
	return r.findProviders(leika, area, limit, false)
}

// FindProvidersWithProof is FindProviders with each provider's proof of
// responsibility (Provider.Proof, see VerifyProof) taken from the same state.
func (r *Reader) FindProvidersWithProof(leika, area string, limit int) (*Providers, error) {
	return r.findProviders(leika, area, limit, true)
}

func (r *Reader) findProviders(leika, area string, limit int, withProof bool) (*Providers, error) {
	if !ValidLeiKa(leika) {
		return nil, invalid("LeiKa key %q must match ^99\\d{12}$", leika)
	}
	if !ValidARS(area) && !ValidAGS(area) {
		return nil, invalid("area %q must be a 12-digit ARS or an 8-digit AGS", area)
	}
	if limit <= 0 {
		limit = 10
	}
	if limit > 100 {
		return nil, invalid("limit %d exceeds 100", limit)
	}
	res := &Providers{}
	idx, err := r.view(func(st *stage) error {
		svc, err := loadService(st, leika)
		if err != nil {
			return err
		}
		res.Service = svc
		ars := area
		if ValidAGS(area) {
			id, err := st.get(agsKey(area))
			if err != nil {
				return err
			}
			if id == nil {
				return fmt.Errorf("%w: no municipality with AGS %s", ErrNotFound, area)
			}
			ars = string(id)
			if !ValidARS(ars) {
				// The AGS belongs to an organisation with a slug id: use its
				// ARS (the prefixes below need 12 digits).
				o := &registryv1.Organisation{}
				if ok, err := st.getProto(orgKey(ars), o); err != nil {
					return err
				} else if !ok || !ValidARS(o.GetArs()) {
					return fmt.Errorf("%w: no municipality with AGS %s", ErrNotFound, area)
				}
				ars = o.GetArs()
			}
		}
		res.AreaARS = ars
		home := &registryv1.Organisation{}
		if ok, err := st.getProto(orgKey(ars), home); err != nil {
			return err
		} else if ok {
			res.Area = home
		}
		orgs := map[string]*registryv1.Organisation{}
		idsAt := func(prefix string) []string {
			var ids []string
			scanKeys(st.txn, providerPrefix(leika, prefix), func(rest []byte) bool {
				ids = append(ids, string(rest))
				return len(ids) < 1000
			})
			return ids
		}
		res.Matches, err = providerCandidates(st, ars, res.Area, idsAt, map[string]*registryv1.Offering{}, orgs)
		if err != nil {
			return err
		}
		slices.SortStableFunc(res.Matches, compareProviders)
		if len(res.Matches) > limit {
			res.Matches = res.Matches[:limit]
		}
		if withProof {
			return attachProofs(st, res.Matches, orgs)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	res.ReadFrom = idx
	for i, p := range res.Matches {
		p.Rank = uint32(i + 1)
		if p.Proof != nil {
			p.Proof.Index = idx
		}
	}
	return res, nil
}

// providerCandidates collects the providers for the municipality ars (its
// record home, nil if unknown), unsorted: idsAt returns the offering ids
// of the provider index at an area prefix; offs and orgs cache records
// across calls (nil entries: missing).
func providerCandidates(st *stage, ars string, home *registryv1.Organisation, idsAt func(prefix string) []string,
	offs map[string]*registryv1.Offering, orgs map[string]*registryv1.Organisation) ([]*registryv1.Provider, error) {
	var out []*registryv1.Provider
	seen := map[string]bool{}
	for _, lvl := range areaLevels {
		prefix := ars[:lvl]
		for _, id := range idsAt(prefix) {
			if seen[id] {
				continue
			}
			seen[id] = true
			off, ok := offs[id]
			if !ok {
				off = &registryv1.Offering{}
				if found, err := st.getProto(offeringKey(id), off); err != nil {
					return nil, err
				} else if !found {
					off = nil
				}
				offs[id] = off
			}
			if off == nil {
				continue
			}
			org, ok := orgs[off.GetOrganisationId()]
			if !ok {
				org = &registryv1.Organisation{}
				if found, err := st.getProto(orgKey(off.GetOrganisationId()), org); err != nil {
					return nil, err
				} else if !found {
					org = nil
				}
				orgs[off.GetOrganisationId()] = org
			}
			if org == nil || org.GetStatus() == registryv1.OrganisationStatus_ORGANISATION_STATUS_SUSPENDED ||
				org.GetStatus() == registryv1.OrganisationStatus_ORGANISATION_STATUS_RETIRED {
				continue
			}
			p := &registryv1.Provider{Organisation: org, Offering: off, MatchedArea: prefix, Match: matchKind(org, ars, lvl)}
			if home != nil {
				p.DistanceKm = distanceKm(home.GetLocation(), org.GetLocation())
			}
			out = append(out, p)
		}
	}
	return out, nil
}

func matchKind(org *registryv1.Organisation, ars string, level int) registryv1.MatchKind {
	switch {
	case org.GetId() == ars:
		return registryv1.MatchKind_MATCH_KIND_OWN_MUNICIPALITY
	case level >= 9:
		return registryv1.MatchKind_MATCH_KIND_DELEGATED
	case level == 5:
		return registryv1.MatchKind_MATCH_KIND_DISTRICT
	default:
		switch org.GetKind() {
		case registryv1.OrganisationKind_ORGANISATION_KIND_STATE_AGENCY, registryv1.OrganisationKind_ORGANISATION_KIND_FEDERAL_AGENCY:
			return registryv1.MatchKind_MATCH_KIND_STATE
		case registryv1.OrganisationKind_ORGANISATION_KIND_DISTRICT:
			return registryv1.MatchKind_MATCH_KIND_DISTRICT
		}
		return registryv1.MatchKind_MATCH_KIND_STATE
	}
}

func has247(o *registryv1.Offering) bool {
	for _, c := range o.GetChannels() {
		if c.GetKind() == registryv1.ChannelKind_CHANNEL_KIND_ONLINE && c.GetAvailable_24_7() {
			return true
		}
	}
	return false
}

func compareProviders(a, b *registryv1.Provider) int {
	if c := cmp.Compare(a.Match, b.Match); c != 0 {
		return c
	}
	if c := cmp.Compare(len(b.MatchedArea), len(a.MatchedArea)); c != 0 {
		return c
	}
	if x, y := has247(a.Offering), has247(b.Offering); x != y {
		if x {
			return -1
		}
		return 1
	}
	if c := cmp.Compare(a.DistanceKm, b.DistanceKm); c != 0 {
		return c
	}
	return strings.Compare(a.Offering.GetId(), b.Offering.GetId())
}

// distanceKm is the great-circle distance, 0 if either point is unknown.
func distanceKm(a, b *registryv1.GeoPoint) float64 {
	if a == nil || b == nil {
		return 0
	}
	const r = 6371.0
	rad := math.Pi / 180
	dlat, dlon := (b.GetLat()-a.GetLat())*rad, (b.GetLon()-a.GetLon())*rad
	h := math.Sin(dlat/2)*math.Sin(dlat/2) + math.Cos(a.GetLat()*rad)*math.Cos(b.GetLat()*rad)*math.Sin(dlon/2)*math.Sin(dlon/2)
	return math.Round(2*r*math.Asin(math.Sqrt(h))*10) / 10
}

// AuthorisationFilter selects authorisations for ListAuthorisations. Every
// filter given must match.
type AuthorisationFilter struct {
	GrantorID string
	GranteeID string
	// Area: an ARS or ARS prefix; authorisations with an area that contains
	// it or lies within it.
	Area      string
	PageSize  int
	PageToken string
}

// ListAuthorisations lists authorisations, one page at a time: by grantor
// or grantee from their indexes (in authorisation id order), otherwise all
// of them in id order.
func (r *Reader) ListAuthorisations(f AuthorisationFilter) ([]*registryv1.Authorisation, string, uint64, error) {
	var err error
	if f.PageSize, err = checkPageSize(f.PageSize); err != nil {
		return nil, "", 0, err
	}
	for _, id := range []string{f.GrantorID, f.GranteeID} {
		if id != "" && !ValidOrgID(id) {
			return nil, "", 0, invalid("organisation id %q must be a 12-digit ARS or a slug", id)
		}
	}
	if f.Area != "" && (len(f.Area) > 12 || strings.Trim(f.Area, "0123456789") != "") {
		return nil, "", 0, invalid("area %q must be an ARS prefix of up to 12 digits", f.Area)
	}
	var prefix []byte
	switch {
	case f.GrantorID != "":
		prefix = k(pAuthGrantor, f.GrantorID, "/")
	case f.GranteeID != "":
		prefix = authGranteePrefix(f.GranteeID)
	default:
		prefix = []byte(pAuth)
	}
	start := prefix
	if f.PageToken != "" {
		b, err := base64.RawURLEncoding.DecodeString(f.PageToken)
		if err != nil || len(b) > 512 || !bytes.HasPrefix(b, prefix) {
			return nil, "", 0, invalid("bad page token")
		}
		start = b
	}
	var out []*registryv1.Authorisation
	var next string
	idx, err := r.view(func(st *stage) error {
		it := st.txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
		defer it.Close()
		for it.Seek(start); it.Valid(); it.Next() {
			key := it.Item().Key()
			if len(out) == f.PageSize {
				next = base64.RawURLEncoding.EncodeToString(it.Item().KeyCopy(nil))
				return nil
			}
			a := &registryv1.Authorisation{}
			if ok, err := st.getProto(authKey(string(key[bytes.LastIndexByte(key, '/')+1:])), a); err != nil {
				return err
			} else if !ok {
				continue
			}
			if (f.GrantorID != "" && a.GetGrantorId() != f.GrantorID) || (f.GranteeID != "" && a.GetGranteeId() != f.GranteeID) {
				continue
			}
			if f.Area != "" && !slices.ContainsFunc(a.GetAreas(), func(g string) bool {
				return strings.HasPrefix(f.Area, g) || strings.HasPrefix(g, f.Area)
			}) {
				continue
			}
			out = append(out, a)
		}
		return nil
	})
	return out, next, idx, err
}

// checkPageSize applies the list queries' page size rule: 0 (or less) means
// 100, more than 1000 is refused.
func checkPageSize(n int) (int, error) {
	switch {
	case n <= 0:
		return 100, nil
	case n > 1000:
		return 0, invalid("page_size %d exceeds 1000", n)
	}
	return n, nil
}
