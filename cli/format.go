package cli

import (
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
)

// choice names an enum value on the command line.
type choice[E comparable] struct {
	name  string
	value E
}

// choices are the names an enum flag accepts.
type choices[E comparable] []choice[E]

func (cs choices[E]) lookup(name string) (E, bool) {
	for _, c := range cs {
		if c.name == name {
			return c.value, true
		}
	}
	var zero E
	return zero, false
}

func (cs choices[E]) names() []string {
	names := make([]string, len(cs))
	for i, c := range cs {
		names[i] = c.name
	}
	return names
}

// prose lists the names as "a, b or c".
func (cs choices[E]) prose() string {
	n := cs.names()
	if len(n) < 2 {
		return strings.Join(n, "")
	}
	return strings.Join(n[:len(n)-1], ", ") + " or " + n[len(n)-1]
}

// enumFlag registers --name taking one of cs; after parsing, *v holds the
// value named (unchanged if the flag is absent).
func enumFlag[E comparable](fs *flagSet, v *E, name, usage string, cs choices[E]) {
	var s string
	fs.StringVar(&s, name, "", usage)
	fs.check(func() error {
		if s == "" {
			return nil
		}
		e, ok := cs.lookup(s)
		if !ok {
			return fmt.Errorf("--%s %q: want %s", name, s, cs.prose())
		}
		*v = e
		return nil
	})
}

// kindNames are the --kind values and how kinds are shown in tables.
var kindNames = choices[registryv1.OrganisationKind]{
	{"municipality", registryv1.OrganisationKind_ORGANISATION_KIND_MUNICIPALITY},
	{"shared-service-centre", registryv1.OrganisationKind_ORGANISATION_KIND_SHARED_SERVICE_CENTRE},
	{"association", registryv1.OrganisationKind_ORGANISATION_KIND_MUNICIPAL_ASSOCIATION},
	{"district", registryv1.OrganisationKind_ORGANISATION_KIND_DISTRICT},
	{"state-agency", registryv1.OrganisationKind_ORGANISATION_KIND_STATE_AGENCY},
	{"federal-agency", registryv1.OrganisationKind_ORGANISATION_KIND_FEDERAL_AGENCY},
	{"network-operator", registryv1.OrganisationKind_ORGANISATION_KIND_NETWORK_OPERATOR},
}

func kindFlagValues() string { return strings.Join(kindNames.names(), "|") }

func parseKind(s string) (registryv1.OrganisationKind, error) {
	if k, ok := kindNames.lookup(s); ok {
		return k, nil
	}
	return 0, fmt.Errorf("--kind %q: want one of %s", s, kindFlagValues())
}

func kindName(k registryv1.OrganisationKind) string {
	for _, n := range kindNames {
		if n.value == k {
			return n.name
		}
	}
	return enumName(k.String(), "ORGANISATION_KIND_")
}

// enumName turns "ORGANISATION_STATUS_ACTIVE" into "active".
func enumName(s, prefix string) string {
	s = strings.TrimPrefix(s, prefix)
	if s == "UNSPECIFIED" {
		return ""
	}
	return strings.ToLower(strings.ReplaceAll(s, "_", " "))
}

func statusName(s registryv1.OrganisationStatus) string {
	return enumName(s.String(), "ORGANISATION_STATUS_")
}

func keyStatusName(s registryv1.KeyStatus) string {
	return enumName(s.String(), "KEY_STATUS_")
}

func matchName(m registryv1.MatchKind) string {
	switch m {
	case registryv1.MatchKind_MATCH_KIND_OWN_MUNICIPALITY:
		return "own municipality"
	case registryv1.MatchKind_MATCH_KIND_DELEGATED:
		return "delegated"
	case registryv1.MatchKind_MATCH_KIND_DISTRICT:
		return "district"
	case registryv1.MatchKind_MATCH_KIND_STATE:
		return "state"
	}
	return enumName(m.String(), "MATCH_KIND_")
}

func channelName(k registryv1.ChannelKind) string {
	return enumName(k.String(), "CHANNEL_KIND_")
}

// channelSummary is the compact form of an offering's channels, e.g.
// "online 24/7, appointment, in person (3)": one entry per kind in the
// order of ChannelKind, with a count when a kind occurs more than once.
func channelSummary(cs []*registryv1.Channel) string {
	type agg struct {
		n     int
		all24 bool
	}
	byKind := map[registryv1.ChannelKind]*agg{}
	var order []registryv1.ChannelKind
	for _, c := range cs {
		a := byKind[c.GetKind()]
		if a == nil {
			a = &agg{}
			byKind[c.GetKind()] = a
			order = append(order, c.GetKind())
		}
		a.n++
		a.all24 = a.all24 || c.GetAvailable_24_7()
	}
	slices.Sort(order)
	parts := make([]string, 0, len(order))
	for _, k := range order {
		a := byKind[k]
		s := channelName(k)
		if s == "" {
			s = "other"
		}
		if a.all24 {
			s += " 24/7"
		}
		if a.n > 1 {
			s += fmt.Sprintf(" (%d)", a.n)
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, ", ")
}

// euros formats cents the German way: 1234567 → "12.345,67".
func euros(cents int64) string {
	neg := cents < 0
	if neg {
		cents = -cents
	}
	whole := strconv.FormatInt(cents/100, 10)
	var b strings.Builder
	if neg {
		b.WriteByte('-')
	}
	for i, r := range whole {
		if i > 0 && (len(whole)-i)%3 == 0 {
			b.WriteByte('.')
		}
		b.WriteRune(r)
	}
	fmt.Fprintf(&b, ",%02d", cents%100)
	return b.String()
}

func currencySymbol(c string) string {
	switch strings.ToUpper(c) {
	case "", "EUR":
		return "€"
	}
	return strings.ToUpper(c)
}

// feeAmount formats one fee: "free", "50,00 €", "50,00–60,00 €", or the
// published text when there are no numbers.
func feeAmount(f *registryv1.Fee) string {
	if f.GetFree() {
		return "free"
	}
	lo, hi := f.GetAmountCents(), f.GetMaxAmountCents()
	if lo == 0 && hi == 0 {
		return oneLine(f.GetText(), 40)
	}
	s := euros(lo)
	if hi > lo {
		s += "–" + euros(hi)
	}
	return s + " " + currencySymbol(f.GetCurrency())
}

// feeSummary is the compact form of an offering's fees for a table cell.
func feeSummary(fs []*registryv1.Fee) string {
	if len(fs) == 0 {
		return ""
	}
	allFree := true
	for _, f := range fs {
		allFree = allFree && f.GetFree()
	}
	if allFree {
		return "free"
	}
	var first *registryv1.Fee
	for _, f := range fs {
		if !f.GetFree() {
			first = f
			break
		}
	}
	s := feeAmount(first)
	if s == "" {
		s = "see details"
	}
	if len(fs) > 1 {
		s += fmt.Sprintf(" (+%d)", len(fs)-1)
	}
	return s
}

func plural(n uint32, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}

// processingNumbers formats the numeric parts of a processing time:
// "15 min", "1–3 days".
func processingNumbers(p *registryv1.ProcessingTime) string {
	var parts []string
	if m := p.GetAppointmentMinutes(); m > 0 {
		parts = append(parts, fmt.Sprintf("%d min", m))
	}
	lo, hi := p.GetMinDays(), p.GetMaxDays()
	switch {
	case lo > 0 && hi > lo:
		parts = append(parts, fmt.Sprintf("%d–%d days", lo, hi))
	case lo > 0:
		parts = append(parts, plural(lo, "day", "days"))
	case hi > 0:
		parts = append(parts, "up to "+plural(hi, "day", "days"))
	}
	return strings.Join(parts, ", ")
}

// processingSummary is the compact form for a table cell: the numbers, or
// the published text when there are none.
func processingSummary(p *registryv1.ProcessingTime) string {
	if s := processingNumbers(p); s != "" {
		return s
	}
	return oneLine(p.GetText(), 40)
}

// oneLine collapses whitespace and cuts s to at most max runes.
func oneLine(s string, max int) string {
	s = strings.Join(strings.Fields(s), " ")
	if max > 0 && utf8.RuneCountInString(s) > max {
		r := []rune(s)
		s = string(r[:max-1]) + "…"
	}
	return s
}

func formatTime(ms int64) string {
	if ms <= 0 {
		return ""
	}
	return time.UnixMilli(ms).Format("2006-01-02 15:04:05 MST")
}

func formatAddress(a *registryv1.Address) string {
	if a == nil {
		return ""
	}
	var parts []string
	for _, s := range []string{a.GetName(), a.GetStreet(), strings.TrimSpace(a.GetPostalCode() + " " + a.GetCity())} {
		if s = oneLine(s, 0); s != "" {
			parts = append(parts, s)
		}
	}
	return strings.Join(parts, ", ")
}

func formatGeo(g *registryv1.GeoPoint) string {
	if g == nil {
		return ""
	}
	return fmt.Sprintf("%.5f, %.5f", g.GetLat(), g.GetLon())
}

func formatRevision(rev uint64, at int64, by string) string {
	if rev == 0 {
		return ""
	}
	s := fmt.Sprintf("%d", rev)
	if t := formatTime(at); t != "" {
		s += ", updated " + t
	}
	if by != "" {
		s += " by " + by
	}
	return s
}

// detail writes "label  value" lines with the label column at a fixed
// width; a value with several lines continues under the first.
type detail struct {
	w      io.Writer
	indent string
	width  int
}

// line prints label and the non-empty values; it reports whether it
// printed anything.
func (d *detail) line(label string, values ...string) bool {
	first := true
	for _, v := range values {
		if v = strings.TrimSpace(cell(v)); v == "" || v == "-" {
			continue
		}
		l := ""
		if first {
			l = label
		}
		fmt.Fprintf(d.w, "%s%-*s %s\n", d.indent, d.width, l, v)
		first = false
	}
	return !first
}

// writeOfferingDetail prints an offering's channels, fees, documents and
// processing time, one line each, readable in a terminal.
func writeOfferingDetail(d *detail, o *registryv1.Offering) {
	for _, c := range o.GetChannels() {
		label := channelName(c.GetKind())
		if c.GetAvailable_24_7() {
			label += " 24/7"
		}
		d.line(label, channelLines(c)...)
	}
	for _, f := range o.GetFees() {
		d.line("fee", feeLine(f))
	}
	for _, doc := range o.GetDocuments() {
		s := doc.GetName()
		if doc.GetRequired() {
			s += " (required)"
		}
		if doc.GetUrl() != "" {
			s += " " + doc.GetUrl()
		}
		d.line("document", s)
	}
	if p := o.GetProcessingTime(); p != nil {
		s, t := processingNumbers(p), oneLine(p.GetText(), 0)
		if s != "" && t != "" {
			s += " (" + t + ")"
		} else if s == "" {
			s = t
		}
		d.line("processing", s)
	}
	if len(o.GetLanguages()) > 0 {
		d.line("languages", strings.Join(o.GetLanguages(), ", "))
	}
	d.line("info", o.GetInfoUrl())
}

// wrap breaks text into lines of at most width runes at spaces.
func wrap(text string, width int) []string {
	var lines []string
	for _, para := range strings.Split(text, "\n") {
		words := strings.Fields(para)
		var cur string
		for _, w := range words {
			if cur != "" && utf8.RuneCountInString(cur)+1+utf8.RuneCountInString(w) > width {
				lines = append(lines, cur)
				cur = ""
			}
			if cur == "" {
				cur = w
			} else {
				cur += " " + w
			}
		}
		lines = append(lines, cur)
	}
	for len(lines) > 0 && lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	return lines
}

// channelLines are the detail lines of a channel: where (address for
// counters, URL for online channels), opening hours and contacts. A short
// note goes in parentheses after the first line unless it repeats the
// address (sample data often puts the office name there).
func channelLines(c *registryv1.Channel) []string {
	addr := formatAddress(c.GetAddress())
	phone := c.GetPhone()
	if phone != "" && c.GetKind() != registryv1.ChannelKind_CHANNEL_KIND_PHONE {
		phone = "phone " + phone
	}
	var lines []string
	switch c.GetKind() {
	case registryv1.ChannelKind_CHANNEL_KIND_IN_PERSON, registryv1.ChannelKind_CHANNEL_KIND_POSTAL:
		lines = []string{addr, c.GetUrl()}
	default:
		lines = []string{c.GetUrl(), addr}
	}
	lines = append(lines, c.GetOpeningHours(), phone, c.GetEmail())
	lines = slices.DeleteFunc(lines, func(s string) bool { return oneLine(s, 0) == "" })
	note := oneLine(c.GetNote(), 0)
	switch {
	case note == "" || strings.Contains(addr, note):
	case len(lines) > 0 && utf8.RuneCountInString(note) <= 40:
		lines[0] = oneLine(lines[0], 0) + " (" + note + ")"
	default:
		lines = append(lines, note)
	}
	if len(lines) == 0 {
		lines = []string{"available"}
	}
	return lines
}

// feeLine is the detail line of a fee: the amount, then what it is for.
// The published text replaces the description when it starts with it.
func feeLine(f *registryv1.Fee) string {
	amount := ""
	if f.GetFree() || f.GetAmountCents() != 0 || f.GetMaxAmountCents() != 0 {
		amount = feeAmount(f)
	}
	desc, text := oneLine(f.GetDescription(), 0), oneLine(f.GetText(), 0)
	what := desc
	switch {
	case text == "":
	case desc == "" || strings.HasPrefix(text, desc):
		what = text
	default:
		what = desc + " – " + text
	}
	switch {
	case amount != "" && what != "":
		return amount + "  " + what
	case amount != "":
		return amount
	case what != "":
		return what
	}
	return "amount not published"
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
