package catalogue

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"

	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
	"github.com/verbund/verbund/registry"
)

// text is a DLDB field read as text whatever JSON type the export used:
// a string as it is, a number in its JSON spelling, true, false and null as
// "" (exports write false for "not known", e.g. "city": false).
type text string

func (t *text) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch {
	case len(b) == 0:
		*t = ""
	case b[0] == '"':
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*t = text(strings.TrimSpace(s))
	case bytes.Equal(b, []byte("null")), bytes.Equal(b, []byte("true")), bytes.Equal(b, []byte("false")):
		*t = ""
	case b[0] == '{' || b[0] == '[':
		return fmt.Errorf("want text, got %s", kindOf(b))
	default:
		var n json.Number
		if err := json.Unmarshal(b, &n); err != nil {
			return err
		}
		*t = text(n.String())
	}
	return nil
}

// flag is a DLDB boolean: true, "1", "true", 1.
type flag bool

func (f *flag) UnmarshalJSON(b []byte) error {
	var t text
	b = bytes.TrimSpace(b)
	if bytes.Equal(b, []byte("true")) {
		*f = true
		return nil
	}
	if err := t.UnmarshalJSON(b); err != nil {
		return err
	}
	v := strings.ToLower(string(t))
	*f = flag(v == "1" || v == "true" || v == "yes" || v == "ja")
	return nil
}

// items is a list of DLDB entries ({name, description, link}) that some
// exports write as one text, or as a list of texts.
type items []item

type item struct {
	Name        text `json:"name"`
	Description text `json:"description"`
	Link        text `json:"link"`
}

func (it *items) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch {
	case bytes.Equal(b, []byte("null")), bytes.Equal(b, []byte("false")), bytes.Equal(b, []byte("{}")):
		*it = nil
		return nil
	case len(b) > 0 && b[0] == '[':
		var raw []json.RawMessage
		if err := json.Unmarshal(b, &raw); err != nil {
			return err
		}
		out := make([]item, 0, len(raw))
		for _, r := range raw {
			var x item
			r = bytes.TrimSpace(r)
			if len(r) > 0 && r[0] == '{' {
				if err := json.Unmarshal(r, &x); err != nil {
					return err
				}
			} else if err := x.Description.UnmarshalJSON(r); err != nil {
				return err
			}
			out = append(out, x)
		}
		*it = out
		return nil
	case len(b) > 0 && b[0] == '{':
		var x item
		if err := json.Unmarshal(b, &x); err != nil {
			return err
		}
		*it = items{x}
		return nil
	default:
		var x item
		if err := x.Description.UnmarshalJSON(b); err != nil {
			return err
		}
		if x.Description == "" {
			*it = nil
		} else {
			*it = items{x}
		}
		return nil
	}
}

func kindOf(b []byte) string {
	switch b[0] {
	case '{':
		return "an object"
	case '[':
		return "a list"
	}
	return "a value"
}

type dldbService struct {
	ID          text `json:"id"`
	Name        text `json:"name"`
	Description text `json:"description"`
	Leika       text `json:"leika"`
	Meta        struct {
		Keywords text `json:"keywords"`
		URL      text `json:"url"`
	} `json:"meta"`
	Forms         items `json:"forms"`
	Links         items `json:"links"`
	Prerequisites items `json:"prerequisites"`
	Requirements  items `json:"requirements"`
	Legal         items `json:"legal"`
	Deadlines     items `json:"deadlines"`
	Fees          text  `json:"fees"`
	Duration      text  `json:"duration"`
	ProcessTime   text  `json:"process_time"`
	Appointment   struct {
		Link text `json:"link"`
	} `json:"appointment"`
	OnlineProcessing struct {
		Link        text `json:"link"`
		Description text `json:"description"`
	} `json:"onlineprocessing"`
	Locations []struct {
		Location    text `json:"location"`
		Appointment struct {
			Link    text `json:"link"`
			Allowed flag `json:"allowed"`
		} `json:"appointment"`
	} `json:"locations"`
}

type dldbLocation struct {
	ID          text `json:"id"`
	Name        text `json:"name"`
	DisplayName text `json:"displayName"`
	Address     struct {
		Street      text `json:"street"`
		HouseNumber text `json:"house_number"`
		PostalCode  text `json:"postal_code"`
		City        text `json:"city"`
	} `json:"address"`
	Geo struct {
		Lat text `json:"lat"`
		Lon text `json:"lon"`
	} `json:"geo"`
	Contact struct {
		Phone text `json:"phone"`
		Email text `json:"email"`
	} `json:"contact"`
}

// dldbRecords splits a DLDB file ({"meta": …, "data": [...]}) into its
// records, undecoded, so that one bad record does not stop the others.
func dldbRecords(data []byte) ([]json.RawMessage, error) {
	var f struct {
		Data []json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, err
	}
	return f.Data, nil
}

// isLocation reports whether a DLDB record is a location (it has an
// address and no LeiKa field).
func isLocation(raw json.RawMessage) bool {
	var probe map[string]json.RawMessage
	if json.Unmarshal(raw, &probe) != nil {
		return false
	}
	_, addr := probe["address"]
	_, leika := probe["leika"]
	_, services := probe["services"]
	return addr && (!leika || services)
}

// parseLocations decodes a locations file; locations that do not decode
// are reported as warnings of the services that use them (their id is
// missing then).
func parseLocations(name string, raws []json.RawMessage, into map[string]*dldbLocation) []string {
	var warn []string
	for i, raw := range raws {
		var l dldbLocation
		if err := json.Unmarshal(raw, &l); err != nil {
			warn = append(warn, fmt.Sprintf("%s#%d: location left out: %v", name, i+1, err))
			continue
		}
		into[string(l.ID)] = &l
	}
	return warn
}

// dldbConverter turns DLDB services into records; offering ids follow the
// sample data's scheme: per LeiKa key the service with the lowest DLDB id
// gets "<org>:<leika>", further ones "<org>:<leika>:<dldb id>".
type dldbConverter struct {
	opt       ParseOptions
	locations map[string]*dldbLocation
}

type dldbEntry struct {
	source string
	svc    dldbService
}

func (c *dldbConverter) convert(entries []dldbEntry, bad []Record) []Record {
	out := bad
	type keyed struct {
		leika string
		e     *dldbEntry
	}
	var all []keyed
	for i := range entries {
		e := &entries[i]
		keys, invalid := leikaKeys(string(e.svc.Leika))
		if len(keys) == 0 {
			why := "field leika is empty"
			if len(invalid) > 0 {
				why = fmt.Sprintf("leika %q is no LeiKa key (14 digits starting with 99)", strings.Join(invalid, ","))
			}
			out = append(out, Record{Source: e.source, Ref: dldbRef(&e.svc), Problem: fmt.Errorf("%w: DLDB service %s: %s", ErrNoLeiKa, dldbRef(&e.svc), why)})
			continue
		}
		for _, k := range keys {
			all = append(all, keyed{k, e})
		}
	}
	num := func(s text) int64 {
		n, err := strconv.ParseInt(string(s), 10, 64)
		if err != nil {
			return 1 << 62
		}
		return n
	}
	slices.SortStableFunc(all, func(a, b keyed) int {
		if a.leika != b.leika {
			return strings.Compare(a.leika, b.leika)
		}
		na, nb := num(a.e.svc.ID), num(b.e.svc.ID)
		switch {
		case na < nb:
			return -1
		case na > nb:
			return 1
		}
		return strings.Compare(string(a.e.svc.ID), string(b.e.svc.ID))
	})
	for i, k := range all {
		id := c.opt.Org + ":" + k.leika
		if i > 0 && all[i-1].leika == k.leika {
			id += ":" + string(k.e.svc.ID)
		}
		out = append(out, c.record(id, k.leika, k.e))
	}
	return out
}

func dldbRef(s *dldbService) string {
	if s.Name != "" {
		return fmt.Sprintf("%s %q", s.ID, plain(string(s.Name), 80))
	}
	return string(s.ID)
}

func (c *dldbConverter) record(id, leika string, e *dldbEntry) Record {
	s := &e.svc
	r := Record{Source: e.source, Ref: dldbRef(s)}
	name := plain(string(s.Name), registry.MaxNameLen)
	if name == "" {
		r.Problem = malformed("DLDB service %s has no name", s.ID)
		return r
	}
	o := &registryv1.Offering{
		Id: id, OrganisationId: c.opt.Org, LeikaKey: leika, Areas: c.opt.defaultAreas(),
		Name: name, Languages: []string{"de"},
	}
	warn := func(format string, args ...any) { r.Warnings = append(r.Warnings, fmt.Sprintf(format, args...)) }
	link := func(field, s string) (string, bool) {
		if strings.TrimSpace(s) == "" {
			return "", false
		}
		s = strings.ReplaceAll(s, "{serviceId}", string(e.svc.ID))
		u, ok := httpURL(s)
		if !ok {
			warn("%s: %q is no http(s) link, left out", field, capText(s, 80))
		}
		return u, ok
	}
	if u, ok := link("meta.url", string(s.Meta.URL)); ok {
		o.InfoUrl = u
	}
	if u, ok := link("onlineprocessing.link", string(s.OnlineProcessing.Link)); ok {
		o.Channels = append(o.Channels, &registryv1.Channel{Kind: registryv1.ChannelKind_CHANNEL_KIND_ONLINE, Url: u, Available_24_7: true,
			Note: plain(string(s.OnlineProcessing.Description), 4096)})
	}
	bookable := false
	for _, l := range s.Locations {
		bookable = bookable || bool(l.Appointment.Allowed)
	}
	if u, ok := link("appointment.link", string(s.Appointment.Link)); ok && bookable {
		o.Channels = append(o.Channels, &registryv1.Channel{Kind: registryv1.ChannelKind_CHANNEL_KIND_APPOINTMENT, Url: u, Note: "Online-Terminvereinbarung"})
	}
	var phones, mails []*registryv1.Channel
	seenPhone, seenMail := map[string]bool{}, map[string]bool{}
	for _, sl := range s.Locations {
		l := c.locations[string(sl.Location)]
		if l == nil {
			warn("location %s is not in the locations file, left out", sl.Location)
			continue
		}
		if len(o.Channels) >= 10 {
			break
		}
		lname := plain(string(l.DisplayName), registry.MaxNameLen)
		if lname == "" {
			lname = plain(string(l.Name), registry.MaxNameLen)
		}
		a := &registryv1.Address{
			Name:        lname,
			Street:      plain(string(l.Address.Street)+" "+string(l.Address.HouseNumber), registry.MaxNameLen),
			HouseNumber: plain(string(l.Address.HouseNumber), registry.MaxHouseNumberLen),
			PostalCode:  plain(string(l.Address.PostalCode), 16),
			City:        plain(string(l.Address.City), registry.MaxNameLen),
		}
		lat, err1 := strconv.ParseFloat(string(l.Geo.Lat), 64)
		lon, err2 := strconv.ParseFloat(string(l.Geo.Lon), 64)
		if err1 == nil && err2 == nil && (lat != 0 || lon != 0) && lat >= -90 && lat <= 90 && lon >= -180 && lon <= 180 {
			a.Location = &registryv1.GeoPoint{Lat: lat, Lon: lon}
		}
		ch := &registryv1.Channel{Kind: registryv1.ChannelKind_CHANNEL_KIND_IN_PERSON, Address: a, Note: lname}
		if u, ok := httpURL(string(sl.Appointment.Link)); ok && bool(sl.Appointment.Allowed) {
			ch.Url = u
		}
		o.Channels = append(o.Channels, ch)
		if p := plain(string(l.Contact.Phone), 100); p != "" && !seenPhone[p] {
			seenPhone[p] = true
			phones = append(phones, &registryv1.Channel{Kind: registryv1.ChannelKind_CHANNEL_KIND_PHONE, Phone: p, Note: lname})
		}
		if m := plain(string(l.Contact.Email), 200); m != "" && !seenMail[m] {
			seenMail[m] = true
			mails = append(mails, &registryv1.Channel{Kind: registryv1.ChannelKind_CHANNEL_KIND_EMAIL, Email: m, Note: lname})
		}
	}
	o.Channels = append(append(o.Channels, phones...), mails...)
	if f := plain(string(s.Fees), 4096); f != "" {
		o.Fees = []*registryv1.Fee{{Text: f, Currency: "EUR"}}
	}
	if s.Duration != "" {
		if n, err := strconv.ParseUint(string(s.Duration), 10, 32); err == nil && n > 0 {
			o.ProcessingTime = &registryv1.ProcessingTime{AppointmentMinutes: uint32(n)}
		} else if err != nil {
			warn("duration %q is no number of minutes, left out", s.Duration)
		}
	}
	if t := plain(string(s.ProcessTime), 4096); t != "" {
		if o.ProcessingTime == nil {
			o.ProcessingTime = &registryv1.ProcessingTime{}
		}
		o.ProcessingTime.Text = t
	}
	seenForm := map[string]bool{}
	for _, f := range append(slices.Clone(s.Forms), s.Links...) {
		u, ok := link("forms.link", string(f.Link))
		n := plain(string(f.Name), registry.MaxNameLen)
		if !ok || n == "" || seenForm[u] || len(o.Forms) == registry.MaxListLen {
			continue
		}
		seenForm[u] = true
		o.Forms = append(o.Forms, &registryv1.Document{Name: n, Url: u})
	}
	for _, p := range s.Prerequisites {
		if t := itemText(p); t != "" && len(o.Prerequisites) < registry.MaxListLen {
			o.Prerequisites = append(o.Prerequisites, t)
		}
	}
	for _, p := range s.Requirements {
		n := plain(string(p.Name), registry.MaxNameLen)
		if n == "" {
			n = plain(string(p.Description), registry.MaxNameLen)
		}
		if n == "" || len(o.Documents) == registry.MaxListLen {
			continue
		}
		d := &registryv1.Document{Name: n, Required: true}
		if u, ok := link("requirements.link", string(p.Link)); ok {
			d.Url = u
		}
		o.Documents = append(o.Documents, d)
	}
	for _, p := range s.Legal {
		n := plain(string(p.Name), registry.MaxNameLen)
		if n == "" {
			n = plain(string(p.Description), registry.MaxNameLen)
		}
		if n == "" || len(o.LegalBasis) == registry.MaxListLen {
			continue
		}
		l := &registryv1.LegalReference{Name: n}
		if u, ok := link("legal.link", string(p.Link)); ok {
			l.Url = u
		}
		o.LegalBasis = append(o.LegalBasis, l)
	}
	for _, p := range s.Deadlines {
		if t := itemText(p); t != "" && len(o.Deadlines) < registry.MaxListLen {
			o.Deadlines = append(o.Deadlines, t)
		}
	}
	r.Offering = o
	var kw []string
	for _, w := range strings.Split(string(s.Meta.Keywords), ",") {
		if w = plain(w, registry.MaxNameLen); w != "" && !slices.Contains(kw, w) && len(kw) < registry.MaxListLen {
			kw = append(kw, w)
		}
	}
	r.Service = &registryv1.Service{LeikaKey: leika, Name: name, Description: plain(string(s.Description), 8<<10), Keywords: kw}
	return r
}

// itemText is an entry's name and description as one text.
func itemText(p item) string {
	n, d := plain(string(p.Name), registry.MaxNameLen), plain(string(p.Description), 4000)
	switch {
	case n == "":
		return d
	case d == "" || d == n:
		return n
	}
	return capText(n+": "+d, 4096)
}
