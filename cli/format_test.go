package cli

import (
	"strings"
	"testing"

	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
)

func TestFormatters(t *testing.T) {
	ch := func(k registryv1.ChannelKind, all247 bool) *registryv1.Channel {
		return &registryv1.Channel{Kind: k, Available_24_7: all247}
	}
	const (
		online   = registryv1.ChannelKind_CHANNEL_KIND_ONLINE
		appt     = registryv1.ChannelKind_CHANNEL_KIND_APPOINTMENT
		inPerson = registryv1.ChannelKind_CHANNEL_KIND_IN_PERSON
		postal   = registryv1.ChannelKind_CHANNEL_KIND_POSTAL
	)
	tests := []struct {
		name string
		got  string
		want string
	}{
		{"euros zero", euros(0), "0,00"},
		{"euros cents", euros(5), "0,05"},
		{"euros thousands", euros(123456789), "1.234.567,89"},
		{"euros exact thousand", euros(100000), "1.000,00"},
		{"fee free", feeAmount(&registryv1.Fee{Free: true}), "free"},
		{"fee fixed", feeAmount(&registryv1.Fee{AmountCents: 3750}), "37,50 €"},
		{"fee range", feeAmount(&registryv1.Fee{AmountCents: 5000, MaxAmountCents: 6000, Currency: "EUR"}), "50,00–60,00 €"},
		{"fee other currency", feeAmount(&registryv1.Fee{AmountCents: 100, Currency: "chf"}), "1,00 CHF"},
		{"fee text only", feeAmount(&registryv1.Fee{Text: "nach  Aufwand"}), "nach Aufwand"},
		{"fees none", feeSummary(nil), ""},
		{"fees all free", feeSummary([]*registryv1.Fee{{Free: true}, {Free: true}}), "free"},
		{"fees several", feeSummary([]*registryv1.Fee{{Free: true}, {AmountCents: 1000}, {AmountCents: 500}}), "10,00 € (+2)"},
		{"channels", channelSummary([]*registryv1.Channel{ch(inPerson, false), ch(online, true), ch(inPerson, false), ch(appt, false), ch(inPerson, false)}), "online 24/7, appointment, in person (3)"},
		{"channels online not 24/7", channelSummary([]*registryv1.Channel{ch(postal, false), ch(online, false)}), "online, postal"},
		{"processing minutes", processingSummary(&registryv1.ProcessingTime{AppointmentMinutes: 15}), "15 min"},
		{"processing range", processingSummary(&registryv1.ProcessingTime{AppointmentMinutes: 20, MinDays: 21, MaxDays: 42}), "20 min, 21–42 days"},
		{"processing one day", processingSummary(&registryv1.ProcessingTime{MinDays: 1, MaxDays: 1}), "1 day"},
		{"processing up to", processingSummary(&registryv1.ProcessingTime{MaxDays: 5}), "up to 5 days"},
		{"processing text", processingSummary(&registryv1.ProcessingTime{Text: "sofort"}), "sofort"},
		{"processing none", processingSummary(nil), ""},
		{"kind", kindName(registryv1.OrganisationKind_ORGANISATION_KIND_MUNICIPAL_ASSOCIATION), "association"},
		{"status", statusName(registryv1.OrganisationStatus_ORGANISATION_STATUS_SUSPENDED), "suspended"},
		{"one line", oneLine("a\tb\n c", 0), "a b c"},
		{"one line cut", oneLine("Bürgerbüro", 5), "Bürg…"},
		{"fee line", feeLine(&registryv1.Fee{Description: "Reisepass", AmountCents: 7000, Text: "70 Euro; unter 24 Jahren 37,50 Euro"}), "70,00 €  Reisepass – 70 Euro; unter 24 Jahren 37,50 Euro"},
		{"fee line text repeats description", feeLine(&registryv1.Fee{Description: "Express", AmountCents: 3200, Text: "Express: plus 32 Euro"}), "32,00 €  Express: plus 32 Euro"},
		{"fee line text only", feeLine(&registryv1.Fee{Text: "Bitte vor Ort zahlen."}), "Bitte vor Ort zahlen."},
		{"fee line nothing", feeLine(&registryv1.Fee{}), "amount not published"},
		{"channel in person", strings.Join(channelLines(&registryv1.Channel{Kind: inPerson, Url: "https://t.example/", Note: "Bürgerbüro Pasing",
			Address: &registryv1.Address{Name: "Bürgerbüro Pasing", City: "München"}, Phone: "089 1"}), " | "),
			"Bürgerbüro Pasing, München | https://t.example/ | phone 089 1"},
		{"channel note", strings.Join(channelLines(&registryv1.Channel{Kind: registryv1.ChannelKind_CHANNEL_KIND_EMAIL, Email: "a@b.de", Note: "Bürgerbüro"}), " | "),
			"a@b.de (Bürgerbüro)"},
		{"channel empty", strings.Join(channelLines(&registryv1.Channel{Kind: online}), " | "), "available"},
		{"address", formatAddress(&registryv1.Address{Name: "Rathaus", PostalCode: "01067", City: "Dresden"}), "Rathaus, 01067 Dresden"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.got != tc.want {
				t.Errorf("got %q, want %q", tc.got, tc.want)
			}
		})
	}
}

func TestWrap(t *testing.T) {
	got := wrap("eins zwei drei vier", 9)
	want := []string{"eins zwei", "drei vier"}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("wrap = %q, want %q", got, want)
	}
}
