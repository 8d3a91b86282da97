package catalogue

import (
	"encoding/json"
	"fmt"
	"strings"

	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
)

// XZuFiSubset is the value of XZuFiFile.Schema this package writes and
// reads.
const XZuFiSubset = "verbund-xzufi-subset/1"

// XZuFiFile is the XZuFi-shaped JSON that Export writes and Parse reads: a
// subset of XZuFi 2.x (the German exchange standard for services,
// Leistungen, and who is responsible for them, Zuständigkeiten), with
// XZuFi's element names in JSON. One Leistung is one offering: the service
// (leistungsschluessel, the LeiKa key) as one organisation
// (zustaendigkeit.organisationseinheit) delivers it in its areas
// (zustaendigkeit.gebietIDs, ARS prefixes). katalog is the catalogue entry
// of the LeiKa key (Leistungsbeschreibung), written for information and
// applied only by organisations that may edit the catalogue.
type XZuFiFile struct {
	Schema string `json:"schema"`
	// Quelle says what was exported ("organisation 091620000000",
	// "state 09") and when.
	Quelle     string          `json:"quelle,omitempty"`
	Leistungen []XZuFiLeistung `json:"leistungen"`
}

// XZuFiLeistung is one offering.
type XZuFiLeistung struct {
	ID                   string             `json:"id"`
	Leistungsschluessel  string             `json:"leistungsschluessel"`
	Leistungsbezeichnung string             `json:"leistungsbezeichnung,omitempty"`
	Zustaendigkeit       XZuFiZustaendig    `json:"zustaendigkeit"`
	Voraussetzungen      []string           `json:"voraussetzungen,omitempty"`
	Rechtsgrundlagen     []XZuFiVerweis     `json:"rechtsgrundlagen,omitempty"`
	Fristen              []string           `json:"fristen,omitempty"`
	Formulare            []XZuFiDokument    `json:"formulare,omitempty"`
	Unterlagen           []XZuFiDokument    `json:"unterlagen,omitempty"`
	Kosten               []XZuFiKosten      `json:"kosten,omitempty"`
	Bearbeitungsdauer    *XZuFiDauer        `json:"bearbeitungsdauer,omitempty"`
	Zugaenge             []XZuFiZugang      `json:"zugaenge,omitempty"`
	Sprachen             []string           `json:"sprachen,omitempty"`
	WeitereInformationen string             `json:"weitereInformationen,omitempty"`
	Katalog              *XZuFiLeistungsbes `json:"katalog,omitempty"`
}

// XZuFiZustaendig is who delivers the service for which areas.
type XZuFiZustaendig struct {
	Organisationseinheit string   `json:"organisationseinheit"`
	GebietIDs            []string `json:"gebietIDs"`
}

// XZuFiVerweis is a legal reference.
type XZuFiVerweis struct {
	Bezeichnung string `json:"bezeichnung"`
	Link        string `json:"link,omitempty"`
}

// XZuFiDokument is a form or a document to bring.
type XZuFiDokument struct {
	Bezeichnung  string `json:"bezeichnung"`
	Link         string `json:"link,omitempty"`
	Erforderlich bool   `json:"erforderlich,omitempty"`
}

// XZuFiKosten is a fee (amounts in euro cents).
type XZuFiKosten struct {
	Beschreibung string `json:"beschreibung,omitempty"`
	BetragCent   int64  `json:"betragCent,omitempty"`
	MaxCent      int64  `json:"betragMaxCent,omitempty"`
	Waehrung     string `json:"waehrung,omitempty"`
	Kostenfrei   bool   `json:"kostenfrei,omitempty"`
	Text         string `json:"text,omitempty"`
}

// XZuFiDauer is the processing time.
type XZuFiDauer struct {
	TerminMinuten uint32 `json:"terminMinuten,omitempty"`
	MinTage       uint32 `json:"minTage,omitempty"`
	MaxTage       uint32 `json:"maxTage,omitempty"`
	Text          string `json:"text,omitempty"`
}

// XZuFiZugang is a channel; art is ONLINE, TERMIN, VOR_ORT, TELEFON, CHAT,
// VIDEO, POST or EMAIL.
type XZuFiZugang struct {
	Art             string          `json:"art"`
	Link            string          `json:"link,omitempty"`
	RundUmDieUhr    bool            `json:"rundUmDieUhr,omitempty"`
	Anschrift       *XZuFiAnschrift `json:"anschrift,omitempty"`
	Oeffnungszeiten string          `json:"oeffnungszeiten,omitempty"`
	Telefon         string          `json:"telefon,omitempty"`
	Email           string          `json:"email,omitempty"`
	Hinweis         string          `json:"hinweis,omitempty"`
}

// XZuFiAnschrift is an address.
type XZuFiAnschrift struct {
	Bezeichnung  string   `json:"bezeichnung,omitempty"`
	Strasse      string   `json:"strasse,omitempty"`
	Hausnummer   string   `json:"hausnummer,omitempty"`
	Postleitzahl string   `json:"postleitzahl,omitempty"`
	Ort          string   `json:"ort,omitempty"`
	Lat          *float64 `json:"lat,omitempty"`
	Lon          *float64 `json:"lon,omitempty"`
}

// XZuFiLeistungsbes is a catalogue entry.
type XZuFiLeistungsbes struct {
	Bezeichnung string   `json:"bezeichnung"`
	Volltext    string   `json:"volltext,omitempty"`
	Schlagworte []string `json:"schlagworte,omitempty"`
	Lebenslagen []string `json:"lebenslagen,omitempty"`
}

var channelArt = map[registryv1.ChannelKind]string{
	registryv1.ChannelKind_CHANNEL_KIND_ONLINE:      "ONLINE",
	registryv1.ChannelKind_CHANNEL_KIND_APPOINTMENT: "TERMIN",
	registryv1.ChannelKind_CHANNEL_KIND_IN_PERSON:   "VOR_ORT",
	registryv1.ChannelKind_CHANNEL_KIND_PHONE:       "TELEFON",
	registryv1.ChannelKind_CHANNEL_KIND_CHAT:        "CHAT",
	registryv1.ChannelKind_CHANNEL_KIND_VIDEO:       "VIDEO",
	registryv1.ChannelKind_CHANNEL_KIND_POSTAL:      "POST",
	registryv1.ChannelKind_CHANNEL_KIND_EMAIL:       "EMAIL",
}

// ToXZuFi writes an offering (and its catalogue entry, if s is not nil).
func ToXZuFi(o *registryv1.Offering, s *registryv1.Service) XZuFiLeistung {
	l := XZuFiLeistung{
		ID: o.GetId(), Leistungsschluessel: o.GetLeikaKey(), Leistungsbezeichnung: o.GetName(),
		Zustaendigkeit:  XZuFiZustaendig{Organisationseinheit: o.GetOrganisationId(), GebietIDs: o.GetAreas()},
		Voraussetzungen: o.GetPrerequisites(), Fristen: o.GetDeadlines(), Sprachen: o.GetLanguages(),
		WeitereInformationen: o.GetInfoUrl(),
	}
	for _, r := range o.GetLegalBasis() {
		l.Rechtsgrundlagen = append(l.Rechtsgrundlagen, XZuFiVerweis{Bezeichnung: r.GetName(), Link: r.GetUrl()})
	}
	for _, f := range o.GetForms() {
		l.Formulare = append(l.Formulare, XZuFiDokument{Bezeichnung: f.GetName(), Link: f.GetUrl(), Erforderlich: f.GetRequired()})
	}
	for _, d := range o.GetDocuments() {
		l.Unterlagen = append(l.Unterlagen, XZuFiDokument{Bezeichnung: d.GetName(), Link: d.GetUrl(), Erforderlich: d.GetRequired()})
	}
	for _, f := range o.GetFees() {
		l.Kosten = append(l.Kosten, XZuFiKosten{Beschreibung: f.GetDescription(), BetragCent: f.GetAmountCents(), MaxCent: f.GetMaxAmountCents(),
			Waehrung: f.GetCurrency(), Kostenfrei: f.GetFree(), Text: f.GetText()})
	}
	if p := o.GetProcessingTime(); p != nil {
		l.Bearbeitungsdauer = &XZuFiDauer{TerminMinuten: p.GetAppointmentMinutes(), MinTage: p.GetMinDays(), MaxTage: p.GetMaxDays(), Text: p.GetText()}
	}
	for _, c := range o.GetChannels() {
		z := XZuFiZugang{Art: channelArt[c.GetKind()], Link: c.GetUrl(), RundUmDieUhr: c.GetAvailable_24_7(),
			Oeffnungszeiten: c.GetOpeningHours(), Telefon: c.GetPhone(), Email: c.GetEmail(), Hinweis: c.GetNote()}
		if a := c.GetAddress(); a != nil {
			z.Anschrift = &XZuFiAnschrift{Bezeichnung: a.GetName(), Strasse: a.GetStreet(), Hausnummer: a.GetHouseNumber(),
				Postleitzahl: a.GetPostalCode(), Ort: a.GetCity()}
			if g := a.GetLocation(); g != nil {
				lat, lon := g.GetLat(), g.GetLon()
				z.Anschrift.Lat, z.Anschrift.Lon = &lat, &lon
			}
		}
		l.Zugaenge = append(l.Zugaenge, z)
	}
	if s != nil {
		l.Katalog = &XZuFiLeistungsbes{Bezeichnung: s.GetName(), Volltext: s.GetDescription(), Schlagworte: s.GetKeywords(), Lebenslagen: s.GetLifeSituations()}
	}
	return l
}

// fromXZuFi reads one Leistung back; the inverse of ToXZuFi.
func fromXZuFi(l *XZuFiLeistung) (*registryv1.Offering, *registryv1.Service, error) {
	o := &registryv1.Offering{
		Id: l.ID, OrganisationId: l.Zustaendigkeit.Organisationseinheit, LeikaKey: l.Leistungsschluessel,
		Areas: l.Zustaendigkeit.GebietIDs, Name: l.Leistungsbezeichnung,
		Prerequisites: l.Voraussetzungen, Deadlines: l.Fristen, Languages: l.Sprachen, InfoUrl: l.WeitereInformationen,
	}
	for _, r := range l.Rechtsgrundlagen {
		o.LegalBasis = append(o.LegalBasis, &registryv1.LegalReference{Name: r.Bezeichnung, Url: r.Link})
	}
	for _, f := range l.Formulare {
		o.Forms = append(o.Forms, &registryv1.Document{Name: f.Bezeichnung, Url: f.Link, Required: f.Erforderlich})
	}
	for _, d := range l.Unterlagen {
		o.Documents = append(o.Documents, &registryv1.Document{Name: d.Bezeichnung, Url: d.Link, Required: d.Erforderlich})
	}
	for _, k := range l.Kosten {
		o.Fees = append(o.Fees, &registryv1.Fee{Description: k.Beschreibung, AmountCents: k.BetragCent, MaxAmountCents: k.MaxCent,
			Currency: k.Waehrung, Free: k.Kostenfrei, Text: k.Text})
	}
	if d := l.Bearbeitungsdauer; d != nil {
		o.ProcessingTime = &registryv1.ProcessingTime{AppointmentMinutes: d.TerminMinuten, MinDays: d.MinTage, MaxDays: d.MaxTage, Text: d.Text}
	}
	for i, z := range l.Zugaenge {
		kind := registryv1.ChannelKind_CHANNEL_KIND_UNSPECIFIED
		for k, a := range channelArt {
			if strings.EqualFold(a, z.Art) {
				kind = k
			}
		}
		if kind == registryv1.ChannelKind_CHANNEL_KIND_UNSPECIFIED {
			return nil, nil, malformed("zugaenge[%d].art %q is none of ONLINE, TERMIN, VOR_ORT, TELEFON, CHAT, VIDEO, POST, EMAIL", i, z.Art)
		}
		c := &registryv1.Channel{Kind: kind, Url: z.Link, Available_24_7: z.RundUmDieUhr, OpeningHours: z.Oeffnungszeiten,
			Phone: z.Telefon, Email: z.Email, Note: z.Hinweis}
		if a := z.Anschrift; a != nil {
			c.Address = &registryv1.Address{Name: a.Bezeichnung, Street: a.Strasse, HouseNumber: a.Hausnummer, PostalCode: a.Postleitzahl, City: a.Ort}
			if a.Lat != nil && a.Lon != nil {
				c.Address.Location = &registryv1.GeoPoint{Lat: *a.Lat, Lon: *a.Lon}
			}
		}
		o.Channels = append(o.Channels, c)
	}
	var s *registryv1.Service
	if k := l.Katalog; k != nil {
		s = &registryv1.Service{LeikaKey: l.Leistungsschluessel, Name: k.Bezeichnung, Description: k.Volltext, Keywords: k.Schlagworte, LifeSituations: k.Lebenslagen}
	}
	return o, s, nil
}

// parseXZuFi reads an XZuFiFile, record by record.
func parseXZuFi(name string, data []byte, opt ParseOptions) ([]Record, error) {
	var f struct {
		Schema     string            `json:"schema"`
		Leistungen []json.RawMessage `json:"leistungen"`
	}
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if f.Schema != "" && f.Schema != XZuFiSubset {
		return nil, fmt.Errorf("%s: schema %q: this version reads %q", name, f.Schema, XZuFiSubset)
	}
	out := make([]Record, 0, len(f.Leistungen))
	for i, raw := range f.Leistungen {
		r := Record{Source: fmt.Sprintf("%s#%d", name, i+1)}
		var l XZuFiLeistung
		if err := json.Unmarshal(raw, &l); err != nil {
			r.Problem = malformed("%v", err)
			out = append(out, r)
			continue
		}
		r.Ref = l.ID
		if r.Ref == "" {
			r.Ref = l.Leistungsbezeichnung
		}
		if l.Leistungsschluessel == "" {
			r.Problem = fmt.Errorf("%w: leistungsschluessel is empty", ErrNoLeiKa)
			out = append(out, r)
			continue
		}
		if keys, _ := leikaKeys(l.Leistungsschluessel); len(keys) != 1 || keys[0] != l.Leistungsschluessel {
			r.Problem = fmt.Errorf("%w: leistungsschluessel %q is no LeiKa key (14 digits starting with 99)", ErrNoLeiKa, l.Leistungsschluessel)
			out = append(out, r)
			continue
		}
		if l.Zustaendigkeit.Organisationseinheit == "" {
			l.Zustaendigkeit.Organisationseinheit = opt.Org
		}
		if len(l.Zustaendigkeit.GebietIDs) == 0 {
			l.Zustaendigkeit.GebietIDs = opt.defaultAreas()
		}
		if l.ID == "" {
			l.ID = l.Zustaendigkeit.Organisationseinheit + ":" + l.Leistungsschluessel
			r.Ref = l.ID
		}
		o, s, err := fromXZuFi(&l)
		if err != nil {
			r.Problem = err
			out = append(out, r)
			continue
		}
		r.Offering, r.Service = o, s
		if o.GetOrganisationId() != opt.Org {
			r.Problem = fmt.Errorf("%w: an offering of %s; importing as %s, only %s's own offerings are imported", ErrNotEntitled, o.GetOrganisationId(), opt.Org, opt.Org)
		}
		out = append(out, r)
	}
	return out, nil
}
