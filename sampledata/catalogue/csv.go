package catalogue

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
	"github.com/verbund/verbund/registry"
)

// CSVColumns are the columns a CSV file may have, in any order, named in
// its header row (UTF-8, optionally with a byte-order mark; separated by
// commas or semicolons, as the header row shows). leika_key and name are
// required. Lists are separated by "|"; a form or legal reference is
// "Name <https://link>" or just "Name".
//
//	id                  offering id (default <org>:<leika_key>)
//	leika_key           14-digit LeiKa key
//	name                the service's name at this organisation
//	areas               ARS prefixes separated by ";" (default: --area, or the organisation's own ARS)
//	info_url            page with more information
//	online_url          online application (an ONLINE channel)
//	appointment_url     appointment booking (an APPOINTMENT channel)
//	location_name       office (an IN_PERSON channel with the address below)
//	street, house_number, postal_code, city
//	opening_hours       of the office
//	phone, email        a PHONE and an EMAIL channel
//	fee_cents           fee in euro cents
//	fee_text            the fee as published
//	appointment_minutes time at the counter
//	prerequisites       Voraussetzungen, "|"-separated
//	legal_basis         Rechtsgrundlagen, "|"-separated
//	deadlines           Fristen, "|"-separated
//	forms               Formulare, "|"-separated
//	languages           ISO 639-1 codes separated by ";" (default de)
var CSVColumns = []string{"id", "leika_key", "name", "areas", "info_url", "online_url", "appointment_url", "location_name",
	"street", "house_number", "postal_code", "city", "opening_hours", "phone", "email", "fee_cents", "fee_text",
	"appointment_minutes", "prerequisites", "legal_basis", "deadlines", "forms", "languages"}

func parseCSV(name string, data []byte, opt ParseOptions) ([]Record, error) {
	data = bytes.TrimPrefix(data, []byte("\ufeff"))
	first, _, _ := bytes.Cut(data, []byte("\n"))
	rd := csv.NewReader(bytes.NewReader(data))
	if bytes.Count(first, []byte(";")) > bytes.Count(first, []byte(",")) {
		rd.Comma = ';'
	}
	rd.FieldsPerRecord = -1
	header, err := rd.Read()
	if err != nil {
		return nil, fmt.Errorf("%s: header row: %w", name, err)
	}
	col := map[string]int{}
	for i, h := range header {
		h = strings.ToLower(strings.TrimSpace(h))
		if !slices.Contains(CSVColumns, h) {
			return nil, fmt.Errorf("%s: unknown column %q (known: %s)", name, h, strings.Join(CSVColumns, ", "))
		}
		col[h] = i
	}
	for _, req := range []string{"leika_key", "name"} {
		if _, ok := col[req]; !ok {
			return nil, fmt.Errorf("%s: no column %s", name, req)
		}
	}
	var out []Record
	for {
		row, err := rd.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		line := 0
		if err == nil {
			line, _ = rd.FieldPos(0)
		}
		r := Record{Source: fmt.Sprintf("%s:%d", name, line)}
		if err != nil {
			var pe *csv.ParseError
			if errors.As(err, &pe) {
				r.Source = fmt.Sprintf("%s:%d", name, pe.Line)
			}
			r.Problem = malformed("%v", err)
			out = append(out, r)
			continue
		}
		if len(row) != len(header) {
			r.Problem = malformed("%d fields, the header has %d", len(row), len(header))
			out = append(out, r)
			continue
		}
		get := func(c string) string {
			if i, ok := col[c]; ok {
				return strings.TrimSpace(row[i])
			}
			return ""
		}
		r.Ref = get("id")
		if r.Ref == "" {
			r.Ref = get("name")
		}
		out = append(out, csvRecord(r, get, opt))
	}
}

func csvRecord(r Record, get func(string) string, opt ParseOptions) Record {
	leika := get("leika_key")
	if leika == "" {
		r.Problem = fmt.Errorf("%w: column leika_key is empty", ErrNoLeiKa)
		return r
	}
	if !registry.ValidLeiKa(leika) {
		r.Problem = fmt.Errorf("%w: leika_key %q is no LeiKa key (14 digits starting with 99)", ErrNoLeiKa, leika)
		return r
	}
	o := &registryv1.Offering{Id: get("id"), OrganisationId: opt.Org, LeikaKey: leika, Name: get("name"), InfoUrl: get("info_url")}
	if o.Id == "" {
		o.Id = opt.Org + ":" + leika
	}
	if r.Ref == "" {
		r.Ref = o.Id
	}
	o.Areas = splitList(get("areas"), ";")
	if len(o.Areas) == 0 {
		o.Areas = opt.defaultAreas()
	}
	o.Languages = splitList(get("languages"), ";")
	if len(o.Languages) == 0 {
		o.Languages = []string{"de"}
	}
	if u := get("online_url"); u != "" {
		o.Channels = append(o.Channels, &registryv1.Channel{Kind: registryv1.ChannelKind_CHANNEL_KIND_ONLINE, Url: u, Available_24_7: true})
	}
	if u := get("appointment_url"); u != "" {
		o.Channels = append(o.Channels, &registryv1.Channel{Kind: registryv1.ChannelKind_CHANNEL_KIND_APPOINTMENT, Url: u})
	}
	if n := get("location_name"); n != "" || get("street") != "" {
		hn := get("house_number")
		street := strings.TrimSpace(get("street") + " " + hn)
		o.Channels = append(o.Channels, &registryv1.Channel{Kind: registryv1.ChannelKind_CHANNEL_KIND_IN_PERSON, Note: n, OpeningHours: get("opening_hours"),
			Address: &registryv1.Address{Name: n, Street: street, HouseNumber: hn, PostalCode: get("postal_code"), City: get("city")}})
	}
	if p := get("phone"); p != "" {
		o.Channels = append(o.Channels, &registryv1.Channel{Kind: registryv1.ChannelKind_CHANNEL_KIND_PHONE, Phone: p})
	}
	if m := get("email"); m != "" {
		o.Channels = append(o.Channels, &registryv1.Channel{Kind: registryv1.ChannelKind_CHANNEL_KIND_EMAIL, Email: m})
	}
	if c, t := get("fee_cents"), get("fee_text"); c != "" || t != "" {
		f := &registryv1.Fee{Text: t, Currency: "EUR"}
		if c != "" {
			n, err := strconv.ParseInt(c, 10, 64)
			if err != nil || n < 0 {
				r.Problem = malformed("fee_cents %q is no amount in cents", c)
				return r
			}
			f.AmountCents, f.Free = n, n == 0
		}
		o.Fees = append(o.Fees, f)
	}
	if m := get("appointment_minutes"); m != "" {
		n, err := strconv.ParseUint(m, 10, 32)
		if err != nil {
			r.Problem = malformed("appointment_minutes %q is no number of minutes", m)
			return r
		}
		o.ProcessingTime = &registryv1.ProcessingTime{AppointmentMinutes: uint32(n)}
	}
	o.Prerequisites = splitList(get("prerequisites"), "|")
	o.Deadlines = splitList(get("deadlines"), "|")
	for _, l := range splitList(get("legal_basis"), "|") {
		n, u := nameLink(l)
		o.LegalBasis = append(o.LegalBasis, &registryv1.LegalReference{Name: n, Url: u})
	}
	for _, l := range splitList(get("forms"), "|") {
		n, u := nameLink(l)
		o.Forms = append(o.Forms, &registryv1.Document{Name: n, Url: u})
	}
	r.Offering = o
	return r
}

func splitList(s, sep string) []string {
	var out []string
	for _, x := range strings.Split(s, sep) {
		if x = strings.TrimSpace(x); x != "" {
			out = append(out, x)
		}
	}
	return out
}

// nameLink splits "Name <https://link>".
func nameLink(s string) (name, link string) {
	if i := strings.LastIndexByte(s, '<'); i >= 0 && strings.HasSuffix(s, ">") {
		return strings.TrimSpace(s[:i]), strings.TrimSpace(s[i+1 : len(s)-1])
	}
	return s, ""
}

// Parse reads the files of one import: DLDB services files (with their
// locations files, in any order), XZuFi JSON and CSV files, chosen by
// content (CSV by the extension .csv). A file that cannot be read at all
// is an error; a record that cannot be imported is a Record with Problem.
// Records come in file order; DLDB records sorted by LeiKa key.
func Parse(files []File, opt ParseOptions) ([]Record, error) {
	type dldbFile struct {
		name string
		raws []json.RawMessage
	}
	var services []dldbFile
	conv := &dldbConverter{opt: opt, locations: map[string]*dldbLocation{}}
	var out []Record
	var locWarn []string
	for _, f := range files {
		name := filepath.Base(f.Name)
		if strings.EqualFold(filepath.Ext(f.Name), ".csv") {
			recs, err := parseCSV(name, f.Data, opt)
			if err != nil {
				return nil, err
			}
			out = append(out, recs...)
			continue
		}
		var probe map[string]json.RawMessage
		if err := json.Unmarshal(f.Data, &probe); err != nil {
			return nil, fmt.Errorf("%s: neither CSV (by extension) nor a JSON object: %w", name, err)
		}
		switch {
		case probe["leistungen"] != nil:
			recs, err := parseXZuFi(name, f.Data, opt)
			if err != nil {
				return nil, err
			}
			out = append(out, recs...)
		case probe["data"] != nil:
			raws, err := dldbRecords(f.Data)
			if err != nil {
				return nil, fmt.Errorf("%s: DLDB export: %w", name, err)
			}
			if len(raws) > 0 && isLocation(raws[0]) {
				locWarn = append(locWarn, parseLocations(name, raws, conv.locations)...)
			} else {
				services = append(services, dldbFile{name, raws})
			}
		default:
			return nil, fmt.Errorf("%s: unknown JSON: want a DLDB export (\"data\") or XZuFi JSON (\"leistungen\")", name)
		}
	}
	var entries []dldbEntry
	var bad []Record
	for _, f := range services {
		for i, raw := range f.raws {
			src := fmt.Sprintf("%s#%d", f.name, i+1)
			var s dldbService
			if err := json.Unmarshal(raw, &s); err != nil {
				bad = append(bad, Record{Source: src, Ref: dldbRawID(raw), Problem: malformed("%v", err)})
				continue
			}
			entries = append(entries, dldbEntry{source: src, svc: s})
		}
	}
	if len(entries) > 0 || len(bad) > 0 {
		recs := conv.convert(entries, bad)
		if len(locWarn) > 0 && len(recs) > 0 {
			recs[0].Warnings = append(recs[0].Warnings, locWarn...)
		}
		out = append(out, recs...)
	}
	seen := map[string]string{}
	for i := range out {
		finish(&out[i], seen)
	}
	return out, nil
}

// dldbRawID is the id of a record that did not decode, if it has one.
func dldbRawID(raw json.RawMessage) string {
	var p struct {
		ID text `json:"id"`
	}
	_ = json.Unmarshal(raw, &p)
	return string(p.ID)
}
