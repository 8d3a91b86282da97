package sampledata

import (
	"fmt"
	"html"
	"net/url"
	"sort"
	"strconv"
	"strings"

	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
	"github.com/verbund/verbund/registry"
	"github.com/verbund/verbund/sampledata/internal/dldb"
)

const (
	maxDescription     = 8 << 10
	maxOfferingPlaces  = 10
	serviceIDTemplate  = "{serviceId}"
	munichOfferingBase = MunichARS + ":"
)

// munichEntry is one DLDB service under one of its LeiKa keys.
type munichEntry struct {
	leika string
	svc   *dldb.Service
}

// leikaKeys splits the DLDB leika field; one record lists four keys
// separated by commas. Keys that are not valid LeiKa keys are dropped.
func leikaKeys(s string) []string {
	var out []string
	for _, k := range strings.Split(s, ",") {
		if k = strings.TrimSpace(k); registry.ValidLeiKa(k) {
			out = append(out, k)
		}
	}
	return out
}

func dldbID(s *dldb.Service) int64 {
	n, err := strconv.ParseInt(s.ID, 10, 64)
	if err != nil {
		return 1 << 62
	}
	return n
}

// munichByLeiKa groups the DLDB services that carry a LeiKa key by key; in
// each group the service with the lowest DLDB id (the original entry; later
// ids are variants such as "bis zu 20 Dokumenten") comes first.
func munichByLeiKa(d *munichData) (map[string][]*dldb.Service, []string) {
	groups := map[string][]*dldb.Service{}
	for i := range d.services {
		s := &d.services[i]
		for _, k := range leikaKeys(s.Leika) {
			groups[k] = append(groups[k], s)
		}
	}
	keys := make([]string, 0, len(groups))
	for k, g := range groups {
		sort.SliceStable(g, func(i, j int) bool { return dldbID(g[i]) < dldbID(g[j]) })
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return groups, keys
}

// MunichServices converts Munich's DLDB export: one catalogue entry per
// LeiKa key (from the DLDB service with the lowest id; keywords and life
// situations are merged over all services with that key) and one offering
// of Munich per DLDB service and LeiKa key. The first service of a key gets
// the offering id "091620000000:<leika>", further ones
// "091620000000:<leika>:<dldb id>". Sorted by LeiKa key and offering id.
func MunichServices() ([]*registryv1.Service, []*registryv1.Offering, error) {
	d, err := loadMunich()
	if err != nil {
		return nil, nil, err
	}
	return munichServices(d)
}

func munichServices(d *munichData) ([]*registryv1.Service, []*registryv1.Offering, error) {
	groups, keys := munichByLeiKa(d)
	services := make([]*registryv1.Service, 0, len(keys))
	var offerings []*registryv1.Offering
	for _, k := range keys {
		g := groups[k]
		services = append(services, convertService(k, g))
		for i, s := range g {
			id := munichOfferingBase + k
			if i > 0 {
				id += ":" + s.ID
			}
			o, err := convertOffering(id, k, s, d.locations)
			if err != nil {
				return nil, nil, err
			}
			offerings = append(offerings, o)
		}
	}
	sort.Slice(offerings, func(i, j int) bool { return offerings[i].GetId() < offerings[j].GetId() })
	return services, offerings, nil
}

func cleanName(s string) string {
	return capText(cleanSpace(html.UnescapeString(s)), registry.MaxNameLen)
}

func convertService(leika string, g []*dldb.Service) *registryv1.Service {
	first := g[0]
	names := make([]string, len(g))
	var kw []string
	seen := map[string]bool{}
	for i, s := range g {
		names[i] = cleanName(s.Name)
		for _, w := range strings.Split(html.UnescapeString(s.Meta.Keywords), ",") {
			w = cleanSpace(w)
			f := fold(w)
			if w == "" || f == "" || seen[f] || len(w) > registry.MaxNameLen || len(kw) >= registry.MaxListLen {
				continue
			}
			seen[f] = true
			kw = append(kw, w)
		}
	}
	return &registryv1.Service{
		LeikaKey:       leika,
		Name:           names[0],
		Description:    plainText(first.Description, maxDescription),
		Keywords:       kw,
		LifeSituations: LifeSituations(leika, names...),
	}
}

func fillServiceID(link, id string) string { return strings.ReplaceAll(link, serviceIDTemplate, id) }

// httpURL returns s if it is an absolute http(s) URL the registry accepts.
func httpURL(s string) (string, bool) {
	s = strings.TrimSpace(s)
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || len(s) > 2048 {
		return "", false
	}
	return s, true
}

func convertOffering(id, leika string, s *dldb.Service, locs map[string]*dldb.Location) (*registryv1.Offering, error) {
	o := &registryv1.Offering{
		Id:             id,
		OrganisationId: MunichARS,
		LeikaKey:       leika,
		Areas:          []string{MunichARS},
		Name:           cleanName(s.Name),
		Languages:      []string{"de"},
	}
	if u, ok := httpURL(fillServiceID(s.Meta.URL, s.ID)); ok {
		o.InfoUrl = u
	}
	links := serviceLinks(s)
	// Online channels first: the one a citizen would try first.
	seenURL := map[string]bool{}
	for _, l := range links {
		if isOnlineLink(l) && !seenURL[l.Link] {
			seenURL[l.Link] = true
			o.Channels = append(o.Channels, &registryv1.Channel{
				Kind: registryv1.ChannelKind_CHANNEL_KIND_ONLINE, Url: l.Link, Available_24_7: true, Note: l.Name,
			})
		}
	}
	// Appointment booking, if any location takes bookings for the service.
	bookable := false
	for _, sl := range s.Locations {
		bookable = bookable || sl.Appointment.Allowed
	}
	if u, ok := httpURL(fillServiceID(s.Appointment.Link, s.ID)); ok && bookable {
		o.Channels = append(o.Channels, &registryv1.Channel{
			Kind: registryv1.ChannelKind_CHANNEL_KIND_APPOINTMENT, Url: u, Note: "Online-Terminvereinbarung",
		})
	}
	// In person at the first ten locations, then their phones and e-mail
	// addresses (deduplicated: the citizens' offices share one number).
	var phones, mails []*registryv1.Channel
	seenPhone, seenMail := map[string]bool{}, map[string]bool{}
	n := 0
	for _, sl := range s.Locations {
		l := locs[sl.Location]
		if l == nil {
			return nil, fmt.Errorf("munich service %s: unknown location %s", s.ID, sl.Location)
		}
		if n == maxOfferingPlaces {
			break
		}
		n++
		name := cleanName(l.DisplayName)
		if name == "" {
			name = cleanName(l.Name)
		}
		ch := &registryv1.Channel{Kind: registryv1.ChannelKind_CHANNEL_KIND_IN_PERSON, Address: address(name, l), Note: name}
		if u, ok := httpURL(sl.Appointment.Link); ok && sl.Appointment.Allowed {
			ch.Url = u
		}
		o.Channels = append(o.Channels, ch)
		if p := cleanSpace(l.Contact.Phone); p != "" && !seenPhone[p] {
			seenPhone[p] = true
			phones = append(phones, &registryv1.Channel{Kind: registryv1.ChannelKind_CHANNEL_KIND_PHONE, Phone: p, Note: name})
		}
		if m := cleanSpace(l.Contact.Email); m != "" && !seenMail[m] {
			seenMail[m] = true
			mails = append(mails, &registryv1.Channel{Kind: registryv1.ChannelKind_CHANNEL_KIND_EMAIL, Email: m, Note: name})
		}
	}
	o.Channels = append(append(o.Channels, phones...), mails...)
	o.Fees = parseFees(s.Fees)
	if s.Duration > 0 {
		o.ProcessingTime = &registryv1.ProcessingTime{AppointmentMinutes: uint32(s.Duration)}
	}
	o.Documents = documents(links)
	// The export's forms (XZuFi Formulare); it has no prerequisites, legal
	// basis or deadlines.
	for _, l := range links[:formCount(s)] {
		if len(o.Forms) < registry.MaxListLen && l.Name != "" {
			o.Forms = append(o.Forms, &registryv1.Document{Name: l.Name, Url: l.Link})
		}
	}
	if err := registry.ValidateOffering(o); err != nil {
		return nil, fmt.Errorf("munich service %s: %w", s.ID, err)
	}
	return o, nil
}

func address(name string, l *dldb.Location) *registryv1.Address {
	a := &registryv1.Address{
		Name:       name,
		Street:     cleanSpace(l.Address.Street + " " + l.Address.HouseNumber),
		PostalCode: cleanSpace(l.Address.PostalCode),
		City:       cleanSpace(l.Address.City),
		// street keeps the number for readers that show street alone.
		HouseNumber: capText(cleanSpace(l.Address.HouseNumber), registry.MaxHouseNumberLen),
	}
	lat, ok1 := l.Geo.Lat.Float()
	lon, ok2 := l.Geo.Lon.Float()
	if ok1 && ok2 && (lat != 0 || lon != 0) && lat >= -90 && lat <= 90 && lon >= -180 && lon <= 180 {
		a.Location = &registryv1.GeoPoint{Lat: lat, Lon: lon}
	}
	return a
}

// serviceLinks collects a service's forms, links and the links in its
// description, with names unescaped and URLs checked, deduplicated by URL.
// (forms and links are identical throughout the 2026 export.)
func serviceLinks(s *dldb.Service) []dldb.Link {
	var out []dldb.Link
	seen := map[string]bool{}
	add := func(name, link string) {
		u, ok := httpURL(html.UnescapeString(link))
		if !ok || seen[u] {
			return
		}
		seen[u] = true
		out = append(out, dldb.Link{Name: cleanName(name), Link: u})
	}
	for _, l := range s.Forms {
		add(l.Name, l.Link)
	}
	for _, l := range s.Links {
		add(l.Name, l.Link)
	}
	for _, l := range descriptionLinks(s.Description) {
		add(l.Name, l.Link)
	}
	return out
}

// descriptionLinks extracts <a href="…">text</a> from an HTML fragment.
func descriptionLinks(s string) []dldb.Link {
	var out []dldb.Link
	for {
		i := indexFold(s, "<a ")
		if i < 0 {
			return out
		}
		s = s[i:]
		end := strings.IndexByte(s, '>')
		if end < 0 {
			return out
		}
		tag := s[:end]
		s = s[end+1:]
		closeTag := indexFold(s, "</a>")
		if closeTag < 0 {
			return out
		}
		text := plainText(s[:closeTag], registry.MaxNameLen)
		s = s[closeTag+4:]
		h := indexFold(tag, "href=")
		if h < 0 {
			continue
		}
		v := tag[h+5:]
		if v == "" {
			continue
		}
		var href string
		if q := v[0]; q == '"' || q == '\'' {
			if e := strings.IndexByte(v[1:], q); e >= 0 {
				href = v[1 : 1+e]
			}
		} else if e := strings.IndexAny(v, " \t\n"); e >= 0 {
			href = v[:e]
		} else {
			href = v
		}
		if href != "" && text != "" {
			out = append(out, dldb.Link{Name: text, Link: href})
		}
	}
}

func indexFold(s, sub string) int {
	// ASCII-only case folding is enough for tag names.
	n := len(sub)
	for i := 0; i+n <= len(s); i++ {
		if strings.EqualFold(s[i:i+n], sub) {
			return i
		}
	}
	return -1
}

// Online channels. The DLDB export has no reliable field for online
// processing: every location's "onlineprocessing" link is just the booking
// page. So a form or link counts as an online channel if
//
//   - it leads to a dedicated online application portal (AKDB
//     BürgerServicePortal, the Federal Office of Justice's portal,
//     BAföG Digital), or
//   - its name says "online" ("Online-Zulassungsbehörde", anchors "online"
//     in the description leading to Munich's application forms),
//
// and it is not information material, a contact/help form, a status
// query, an appointment booking or a PDF.
var (
	onlinePortals = []string{"buergerservice-portal.de", "buergerserviceportal.de", "fuehrungszeugnis.bund.de", "bafoeg-digital.de"}
	notOnline     = []string{"information", "flyer", "fragen", "faq", "bearbeitungsstand", "termin", "wunschkennzeichen", "hilfe", "merkblatt"}
)

func isOnlineLink(l dldb.Link) bool {
	u, err := url.Parse(l.Link)
	if err != nil {
		return false
	}
	host := strings.ToLower(u.Hostname())
	path := strings.ToLower(u.Path + "?" + u.RawQuery + "#" + u.Fragment)
	name := " " + fold(l.Name) + " "
	if strings.HasSuffix(path, ".pdf") || strings.Contains(path, ".pdf?") || strings.Contains(path, "/dms/") ||
		strings.Contains(path, "terminvereinbarung") || strings.Contains(path, "/termin/") || strings.Contains(path, "/faqs/") {
		return false
	}
	for _, w := range notOnline {
		if strings.Contains(name, w) {
			return false
		}
	}
	for _, p := range onlinePortals {
		if host == p || strings.HasSuffix(host, "."+p) {
			return true
		}
	}
	return strings.Contains(name, " online")
}

// Documents. The export has no list of required documents (no
// prerequisites/documents/requirements fields); what it has are downloadable
// forms (application forms, powers of attorney, declarations), which become
// documents with required = false. Information sheets are left out.
var notDocument = []string{"merkblatt", "infoblatt", "informationsblatt", "hinweisblatt", "hinweise", "information", "broschuere", "flyer", "richtlinie", "verordnung", "staatenliste", "fotomustertafel", "kostenersatz", "pfaendungsfreigrenzen", "bekanntmachung"}

func documents(links []dldb.Link) []*registryv1.Document {
	var out []*registryv1.Document
	for _, l := range links {
		u, err := url.Parse(l.Link)
		if err != nil {
			continue
		}
		p := strings.ToLower(u.Path)
		if !strings.HasSuffix(p, ".pdf") && !strings.Contains(p, "/dms/") {
			continue
		}
		name := fold(l.Name)
		skip := name == ""
		for _, w := range notDocument {
			skip = skip || strings.Contains(name, w)
		}
		if skip {
			continue
		}
		out = append(out, &registryv1.Document{Name: l.Name, Url: l.Link})
		if len(out) == registry.MaxListLen {
			break
		}
	}
	return out
}

// formCount is how many of serviceLinks(s) come from the service's forms
// (they come first).
func formCount(s *dldb.Service) int {
	seen := map[string]bool{}
	for _, l := range s.Forms {
		if u, ok := httpURL(html.UnescapeString(l.Link)); ok {
			seen[u] = true
		}
	}
	return len(seen)
}
