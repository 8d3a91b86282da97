package registry

import (
	"bytes"
	"encoding/base64"
	"slices"
	"strings"

	badger "github.com/dgraph-io/badger/v4"

	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
)

// OfferingFilter selects offerings for ListOfferings.
type OfferingFilter struct {
	// OrganisationID, if set: only that organisation's offerings (from its
	// index x/oo).
	OrganisationID string
	// Area, if set (an ARS prefix of up to 12 digits): only offerings with
	// an area within it or containing it.
	Area      string
	PageSize  int
	PageToken string
}

// ListOfferings lists offerings in offering id order, one page at a time:
// an organisation's from its index, otherwise all of them (filtered by
// area). The page token is the next key to read.
func (r *Reader) ListOfferings(f OfferingFilter) ([]*registryv1.Offering, string, uint64, error) {
	var err error
	if f.PageSize, err = checkPageSize(f.PageSize); err != nil {
		return nil, "", 0, err
	}
	if f.OrganisationID != "" && !ValidOrgID(f.OrganisationID) {
		return nil, "", 0, invalid("organisation id %q must be a 12-digit ARS or a slug", f.OrganisationID)
	}
	if f.Area != "" && (len(f.Area) > 12 || strings.Trim(f.Area, "0123456789") != "") {
		return nil, "", 0, invalid("area %q must be an ARS prefix of up to 12 digits", f.Area)
	}
	prefix := []byte(pOffering)
	if f.OrganisationID != "" {
		prefix = k(pOrgOffers, f.OrganisationID, "/")
	}
	start := prefix
	if f.PageToken != "" {
		b, err := base64.RawURLEncoding.DecodeString(f.PageToken)
		if err != nil || len(b) > 512 || !bytes.HasPrefix(b, prefix) {
			return nil, "", 0, invalid("bad page token")
		}
		start = b
	}
	var out []*registryv1.Offering
	var next string
	idx, err := r.view(func(st *stage) error {
		it := st.txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
		defer it.Close()
		for it.Seek(start); it.Valid(); it.Next() {
			if len(out) == f.PageSize {
				next = base64.RawURLEncoding.EncodeToString(it.Item().KeyCopy(nil))
				return nil
			}
			id := string(it.Item().Key()[len(prefix):])
			o := &registryv1.Offering{}
			if ok, err := st.getProto(offeringKey(id), o); err != nil {
				return err
			} else if !ok {
				continue
			}
			if f.OrganisationID != "" && o.GetOrganisationId() != f.OrganisationID {
				continue
			}
			if f.Area != "" && !slices.ContainsFunc(o.GetAreas(), func(g string) bool {
				return strings.HasPrefix(f.Area, g) || strings.HasPrefix(g, f.Area)
			}) {
				continue
			}
			out = append(out, o)
		}
		return nil
	})
	return out, next, idx, err
}

// Entitled reports whether org may offer leika for area under the rule
// area-responsibility, given the authorisations granted to it: area lies in
// org's own area, or one of auths (granted to org) covers it. Importers
// use it to refuse a record before sending it; the registry decides the
// same way when it applies the offering.
func Entitled(org *registryv1.Organisation, auths []*registryv1.Authorisation, leika, area string) bool {
	if within(area, ownArea(org)) {
		return true
	}
	for _, au := range auths {
		if au.GetGranteeId() == org.GetId() && covers(au, leika, area) {
			return true
		}
	}
	return false
}
