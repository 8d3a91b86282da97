// Package catalogue reads an organisation's own service catalogue from a
// file, compares it with the registry and applies the difference as
// explicit, signed upserts and deletions; and writes an organisation's or a
// state's offerings back out.
//
// Three formats are read (Parse picks one per file):
//
//   - a DLDB export (services_de.json, with locations_de.json for the
//     addresses), as the eappointment/DLDB systems of German cities write
//     it, any city's: fields that are sometimes strings, numbers, booleans
//     or null are read as text (a city of false is no city);
//   - the XZuFi-shaped JSON that Export writes (see XZuFiFile);
//   - a CSV file with a header row (see the CSV columns in csv.go).
//
// Every record of a file becomes one Record: an offering of the importing
// organisation, or the reason it cannot be one (missing LeiKa key,
// malformed field, unknown area, another organisation's offering). Plan
// then checks each record against the registry and its governance rules
// and sorts it into new, changed, unchanged or refused; deletions happen
// only when asked for. Apply sends one signed command per change, with a
// precondition on the revision it saw and a command id derived from the
// change, so each change is all-or-nothing and a re-run after an
// interruption sends only what is still missing.
package catalogue

import (
	"errors"
	"fmt"
	"html"
	"regexp"
	"strings"
	"unicode/utf8"

	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
	"github.com/verbund/verbund/registry"
)

// Reasons a record is refused; errors.Is tells them apart.
var (
	// ErrNoLeiKa: the record carries no (valid) LeiKa key.
	ErrNoLeiKa = errors.New("missing LeiKa key")
	// ErrMalformed: a field cannot be read or breaks the registry's limits.
	ErrMalformed = errors.New("malformed field")
	// ErrUnknownArea: an area is no ARS prefix, or no organisation is
	// registered for it.
	ErrUnknownArea = errors.New("unknown area")
	// ErrNotEntitled: the governance rules do not let the importing
	// organisation publish the record (another organisation's offering, an
	// area that is neither its own nor authorised, a LeiKa key missing from
	// the catalogue that it may not add, an organisation not active).
	ErrNotEntitled = errors.New("not entitled")
)

// Format names a file format.
type Format string

// The formats Parse reads.
const (
	FormatDLDB          Format = "dldb"
	FormatDLDBLocations Format = "dldb-locations"
	FormatXZuFi         Format = "xzufi"
	FormatCSV           Format = "csv"
)

// File is one input file.
type File struct {
	Name string
	Data []byte
}

// Record is one record of an input file.
type Record struct {
	// Source says where the record is: "services.json#12" (the 12th
	// record, from 1), "offers.csv:7" (line 7).
	Source string
	// Ref is what the file calls the record (DLDB id, CSV or XZuFi id,
	// name), for the report.
	Ref string
	// Offering is the record as an offering (nil if Problem is set before
	// an id could be given).
	Offering *registryv1.Offering
	// Service is the catalogue entry the file carries for the offering's
	// LeiKa key, if any.
	Service *registryv1.Service
	// Problem, if set, is why the record cannot be imported (wrapping one
	// of the Err* reasons).
	Problem error
	// Warnings are parts of the record that were left out (an invalid
	// link, an over-long text cut), the record itself being fine.
	Warnings []string
}

// ParseOptions configure Parse.
type ParseOptions struct {
	// Org is the importing organisation: DLDB and CSV records become its
	// offerings; XZuFi records of other organisations are refused.
	Org string
	// Areas are the areas of records that name none (DLDB records never
	// do). Default: Org itself if it is a 12-digit ARS (a municipality).
	Areas []string
}

func (o ParseOptions) defaultAreas() []string {
	if len(o.Areas) > 0 {
		return o.Areas
	}
	if registry.ValidARS(o.Org) {
		return []string{o.Org}
	}
	return nil
}

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
}

// finish validates a record's offering with the registry's own limits and
// refuses duplicate ids within one import.
func finish(r *Record, seen map[string]string) {
	if r.Problem != nil || r.Offering == nil {
		return
	}
	o := r.Offering
	if len(o.GetAreas()) == 0 {
		r.Problem = fmt.Errorf("%w: the record names no area and --area is not set (the organisation is not a municipality)", ErrUnknownArea)
		return
	}
	for _, a := range o.GetAreas() {
		if !registry.ValidAreaPrefix(a) {
			r.Problem = fmt.Errorf("%w: %q is no ARS prefix of 2, 3, 5, 9 or 12 digits", ErrUnknownArea, a)
			return
		}
	}
	if err := registry.ValidateOffering(o); err != nil {
		r.Problem = fmt.Errorf("%w: %v", ErrMalformed, err)
		return
	}
	if r.Service != nil {
		if err := registry.ValidateService(r.Service); err != nil {
			r.Problem = fmt.Errorf("%w: catalogue entry: %v", ErrMalformed, err)
			return
		}
	}
	if prev, ok := seen[o.GetId()]; ok {
		r.Problem = malformed("offering id %s is used twice in the import (first at %s)", o.GetId(), prev)
		return
	}
	seen[o.GetId()] = r.Source
}

var (
	reTag   = regexp.MustCompile(`<[^>]*>`)
	reSpace = regexp.MustCompile(`\s+`)
)

// plain turns an HTML fragment into one line of text, cut to max bytes (at
// a rune boundary, with "…").
func plain(s string, max int) string {
	s = reTag.ReplaceAllString(s, " ")
	s = html.UnescapeString(s)
	s = strings.ReplaceAll(s, "\u200b", "")
	s = strings.TrimSpace(reSpace.ReplaceAllString(s, " "))
	return capText(s, max)
}

func capText(s string, max int) string {
	if len(s) <= max {
		return s
	}
	cut := max - len("…")
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// httpURL returns s if it is an absolute http(s) URL the registry accepts.
func httpURL(s string) (string, bool) {
	s = strings.TrimSpace(html.UnescapeString(s))
	if s == "" {
		return "", false
	}
	return s, checkURL(s) == nil
}

func checkURL(s string) error {
	return registry.ValidateOffering(&registryv1.Offering{Id: "url-check", OrganisationId: "url-check", LeikaKey: "99000000000000",
		Areas: []string{"09"}, InfoUrl: s})
}

// leikaKeys splits a LeiKa field ("99…", "99…, 99…"): the valid keys and
// the invalid parts.
func leikaKeys(s string) (keys, bad []string) {
	for _, k := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ';' || r == ' ' }) {
		if registry.ValidLeiKa(k) {
			keys = append(keys, k)
		} else {
			bad = append(bad, k)
		}
	}
	return keys, bad
}
