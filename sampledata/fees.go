package sampledata

import (
	"regexp"
	"strconv"
	"strings"

	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
)

// Fee parsing. DLDB fees are HTML written for people, e.g.
//
//	<p>50 bis 60 Euro (abhängig von der Rechtsform)</p>
//	<p><strong>Online-Gebühr: …</strong><br>Neufahrzeug: ab 20,50 Euro<br>…</p>
//
// parseFees turns every line into one Fee, in order:
//
//   - a line with euro amounts becomes a fee with amount_cents (the lowest
//     amount) and max_amount_cents (the highest, if different): "40 Euro" →
//     4000; "50 bis 60 Euro" / "600 - 1000 Euro" → range; "ab 20,50 Euro" →
//     2050 (open upwards, max 0); "bis 100 Euro" → 0 … 10000; several amounts
//     on a line ("10 Euro, beziehungsweise 15 Euro") → their range;
//   - a line that says the service is free ("gebührenfrei", "kostenlos",
//     "kostenfrei", "keine Gebühr(en)", …) and has no amount → free = true;
//   - a line ending in ':' (or starting with "Online-Gebühr", "Vor-Ort-
//     Gebühr") is a heading; it is not a fee itself but prefixes the
//     description of the fees below it, until the next heading or the first
//     paragraph break after a fee;
//   - other lines (explanations, bank details, lines with both an amount
//     and a "free" word) are kept verbatim as fees without numbers; runs of
//     them are merged into one fee.
//
// Every fee keeps its line(s) in text, and the label before the first ':'
// (with the heading) in description. Currency is always EUR.

const maxFeeText = 4096

var (
	feeNum    = `(\d{1,3}(?:\.\d{3})+|\d+)(?:,(\d{1,2}))?`
	feeEuro   = `(?:euro\b|eur\b|€)`
	reFeeAmnt = regexp.MustCompile(`(?i)(?:\b(ab|bis(?:\s+zu)?)\s+)?` + feeNum +
		`(?:\s*` + feeEuro + `)?(?:\s*(?:bis(?:\s+zu)?|-|–|—)\s*` + feeNum + `)?\s*` + feeEuro)
	reFeeHead = regexp.MustCompile(`(?i)^(online|vor-ort)-gebühr\b`)
	freeWords = []string{"gebuehrenfrei", "kostenlos", "kostenfrei", "keine gebuehr", "keine kosten", "unentgeltlich", "gebuehrenbefreit"}
)

// feeAmount is what a line says about the price, in cents.
type feeAmount struct {
	lo, hi int64 // hi = 0: no upper bound given or fixed
	ok     bool
}

func cents(whole, frac string) int64 {
	w, _ := strconv.ParseInt(strings.ReplaceAll(whole, ".", ""), 10, 64)
	c := int64(0)
	if frac != "" {
		c, _ = strconv.ParseInt(frac, 10, 64)
		if len(frac) == 1 {
			c *= 10
		}
	}
	return w*100 + c
}

// parseAmounts finds the euro amounts of a line; idx is the byte offset of
// the first one (-1 if none).
func parseAmounts(line string) (a feeAmount, idx int) {
	ms := reFeeAmnt.FindAllStringSubmatchIndex(line, -1)
	if len(ms) == 0 {
		return a, -1
	}
	sub := func(m []int, i int) string {
		if m[2*i] < 0 {
			return ""
		}
		return line[m[2*i]:m[2*i+1]]
	}
	// Every amount widens [lo, hi]; "bis X" alone only raises hi, so that
	// "ab 40 Euro (… bis zu 250 Euro)" is 40 … 250 and "bis 100 Euro" 0 … 100.
	haveLo := false
	for _, m := range ms {
		kind := strings.ToLower(sub(m, 1))
		lo := cents(sub(m, 2), sub(m, 3))
		hi := lo
		if sub(m, 4) != "" {
			hi = cents(sub(m, 4), sub(m, 5))
			if hi < lo {
				lo, hi = hi, lo
			}
		} else if strings.HasPrefix(kind, "bis") {
			a.hi = max(a.hi, hi)
			continue
		}
		if !haveLo || lo < a.lo {
			a.lo = lo
		}
		haveLo = true
		a.hi = max(a.hi, hi)
	}
	if !haveLo {
		a.lo = 0
	}
	if a.hi == a.lo {
		a.hi = 0
	}
	a.ok = true
	return a, ms[0][0]
}

func isFreeLine(line string) bool {
	f := fold(line)
	for _, w := range freeWords {
		if strings.Contains(f, w) {
			return true
		}
	}
	return false
}

// feeLabel is the text before the first ':' if that comes before limit.
func feeLabel(line string, limit int) string {
	if limit < 0 {
		limit = len(line)
	}
	i := strings.IndexByte(line, ':')
	if i <= 0 || i > limit || i > 200 {
		return ""
	}
	return strings.TrimSpace(line[:i])
}

func joinDesc(heading, label string) string {
	switch {
	case heading == "":
		return label
	case label == "":
		return heading
	}
	return heading + " – " + label
}

// parseFees converts a DLDB fee HTML fragment; see the comment above.
func parseFees(feeHTML string) []*registryv1.Fee {
	var out []*registryv1.Fee
	var pending []string
	heading, underHeading := "", 0
	flush := func() {
		if len(pending) > 0 {
			out = append(out, &registryv1.Fee{Currency: "EUR", Text: capText(strings.Join(pending, "\n"), maxFeeText)})
			pending = nil
		}
	}
	for _, line := range htmlLines(feeHTML) {
		if line == "" {
			if underHeading > 0 {
				heading, underHeading = "", 0
			}
			continue
		}
		amt, idx := parseAmounts(line)
		free := isFreeLine(line)
		switch {
		case amt.ok && !free:
			flush()
			out = append(out, &registryv1.Fee{
				Description:    joinDesc(heading, feeLabel(line, idx)),
				AmountCents:    amt.lo,
				MaxAmountCents: amt.hi,
				Currency:       "EUR",
				Text:           capText(line, maxFeeText),
			})
			underHeading++
		case free && !amt.ok:
			flush()
			out = append(out, &registryv1.Fee{
				Description: joinDesc(heading, feeLabel(line, -1)),
				Free:        true,
				Currency:    "EUR",
				Text:        capText(line, maxFeeText),
			})
			underHeading++
		case !amt.ok && len(line) <= 160 && strings.HasSuffix(line, ":"):
			flush()
			heading, underHeading = strings.TrimSpace(strings.TrimSuffix(line, ":")), 0
		case !amt.ok && reFeeHead.MatchString(line):
			flush()
			heading, underHeading = line, 0
			if i := strings.IndexByte(line, ':'); i > 0 {
				heading = strings.TrimSpace(line[:i])
				if rest := strings.TrimSpace(line[i+1:]); rest != "" {
					heading += " (" + rest + ")"
				}
			}
		default:
			pending = append(pending, line)
		}
		if len(out) >= 100 {
			break
		}
	}
	flush()
	return out
}

// feeParsed reports whether a fee carries numbers (an amount or free).
func feeParsed(f *registryv1.Fee) bool {
	return f.GetFree() || f.GetAmountCents() > 0 || f.GetMaxAmountCents() > 0
}
