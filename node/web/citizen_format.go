package web

import (
	"fmt"
	"strings"

	federationv1 "github.com/verbund/verbund/proto/gen/verbund/federation/v1"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
)

// German names and texts of the registry's values, for the templates.

// channelName is the German name of a channel kind, on the citizens'
// pages and the staff's alike.
func channelName(k registryv1.ChannelKind) string {
	switch k {
	case registryv1.ChannelKind_CHANNEL_KIND_ONLINE:
		return "Online"
	case registryv1.ChannelKind_CHANNEL_KIND_APPOINTMENT:
		return "Termin buchen"
	case registryv1.ChannelKind_CHANNEL_KIND_IN_PERSON:
		return "Vor Ort"
	case registryv1.ChannelKind_CHANNEL_KIND_PHONE:
		return "Telefon"
	case registryv1.ChannelKind_CHANNEL_KIND_CHAT:
		return "Chat"
	case registryv1.ChannelKind_CHANNEL_KIND_VIDEO:
		return "Video-Beratung"
	case registryv1.ChannelKind_CHANNEL_KIND_POSTAL:
		return "Per Post"
	case registryv1.ChannelKind_CHANNEL_KIND_EMAIL:
		return "E-Mail"
	}
	return "Weiterer Weg"
}

func matchName(m registryv1.MatchKind) string {
	switch m {
	case registryv1.MatchKind_MATCH_KIND_OWN_MUNICIPALITY:
		return "Ihre Gemeinde"
	case registryv1.MatchKind_MATCH_KIND_DELEGATED:
		return "Für Ihre Gemeinde beauftragt"
	case registryv1.MatchKind_MATCH_KIND_DISTRICT:
		return "Landkreis"
	case registryv1.MatchKind_MATCH_KIND_STATE:
		return "Land oder Bund"
	}
	return "Zuständige Stelle"
}

func kindName(k registryv1.OrganisationKind) string {
	switch k {
	case registryv1.OrganisationKind_ORGANISATION_KIND_MUNICIPALITY:
		return "Gemeinde"
	case registryv1.OrganisationKind_ORGANISATION_KIND_SHARED_SERVICE_CENTRE:
		return "Servicezentrum"
	case registryv1.OrganisationKind_ORGANISATION_KIND_MUNICIPAL_ASSOCIATION:
		return "Verwaltungsgemeinschaft"
	case registryv1.OrganisationKind_ORGANISATION_KIND_DISTRICT:
		return "Landkreis"
	case registryv1.OrganisationKind_ORGANISATION_KIND_STATE_AGENCY:
		return "Landesbehörde"
	case registryv1.OrganisationKind_ORGANISATION_KIND_FEDERAL_AGENCY:
		return "Bundesbehörde"
	case registryv1.OrganisationKind_ORGANISATION_KIND_NETWORK_OPERATOR:
		return "Betreiber des Verbunds"
	}
	return "Stelle"
}

// feeText: "kostenlos", "50,00 €", "50,00 € bis 60,00 €", or the
// published text; a description is added.
func feeText(f *registryv1.Fee) string {
	var s string
	switch {
	case f.GetFree():
		s = "kostenlos"
	case f.GetAmountCents() > 0 && f.GetMaxAmountCents() > f.GetAmountCents():
		s = euro(f.GetAmountCents()) + " bis " + euro(f.GetMaxAmountCents())
	case f.GetAmountCents() > 0:
		s = euro(f.GetAmountCents())
	default:
		s = f.GetText()
	}
	if s == "" {
		s = "Gebühr: bitte bei der Stelle erfragen"
	}
	if d := f.GetDescription(); d != "" {
		s = d + ": " + s
	}
	return s
}

// processingText describes a processing time ("" if unknown).
func processingText(p *registryv1.ProcessingTime) string {
	var parts []string
	if m := p.GetAppointmentMinutes(); m > 0 {
		parts = append(parts, fmt.Sprintf("Termin etwa %d Minuten", m))
	}
	switch lo, hi := p.GetMinDays(), p.GetMaxDays(); {
	case hi > lo && lo > 0:
		parts = append(parts, fmt.Sprintf("Bearbeitung %d bis %d Tage", lo, hi))
	case hi > 0:
		parts = append(parts, fmt.Sprintf("Bearbeitung bis %d Tage", hi))
	case lo > 0:
		parts = append(parts, fmt.Sprintf("Bearbeitung ab %d Tagen", lo))
	}
	if t := p.GetText(); t != "" {
		parts = append(parts, t)
	}
	return strings.Join(parts, "; ")
}

// addressText: "Gewerbeamt, Implerstraße 11, 81371 München".
func addressText(a *registryv1.Address) string {
	street := a.GetStreet()
	if hn := a.GetHouseNumber(); hn != "" && !strings.HasSuffix(street, hn) {
		street = strings.TrimSpace(street + " " + hn)
	}
	var parts []string
	for _, p := range []string{a.GetName(), street, strings.TrimSpace(a.GetPostalCode() + " " + a.GetCity())} {
		if p != "" {
			parts = append(parts, p)
		}
	}
	return strings.Join(parts, ", ")
}

func eventName(t federationv1.EventType) string {
	switch t {
	case federationv1.EventType_EVENT_TYPE_HANDED_OVER:
		return "Übergeben und eingegangen"
	case federationv1.EventType_EVENT_TYPE_ACCEPTED:
		return "Angenommen, in Bearbeitung"
	case federationv1.EventType_EVENT_TYPE_REJECTED:
		return "Zurückgewiesen"
	case federationv1.EventType_EVENT_TYPE_COMPLETED:
		return "Abgeschlossen"
	case federationv1.EventType_EVENT_TYPE_FORWARDED:
		return "Weitergeleitet"
	}
	return "Schritt"
}
