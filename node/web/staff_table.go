package web

import (
	"bytes"
	"cmp"
	"net/url"
	"slices"
	"strings"
)

// Tables of the staff pages sort without JavaScript: a column header is a
// link with ?sort=<column>&richtung=auf|ab (keeping the page's other query
// parameters); the handler sorts by it (stable, so equal rows keep the
// API's order).

// sortSpec is a table's sort order taken from the query.
type sortSpec struct {
	Key  string
	Desc bool
}

// parseSort reads sort and richtung from q; a key not in allowed falls
// back to def (and its default direction defDesc).
func parseSort(q url.Values, allowed []string, def string, defDesc bool) sortSpec {
	k := q.Get("sort")
	if !slices.Contains(allowed, k) {
		return sortSpec{Key: def, Desc: defDesc}
	}
	switch q.Get("richtung") {
	case "ab":
		return sortSpec{Key: k, Desc: true}
	case "auf":
		return sortSpec{Key: k}
	}
	return sortSpec{Key: k, Desc: k == def && defDesc}
}

// sortRows sorts rows by the comparison named by spec.Key (ascending;
// reversed for Desc). Unknown keys leave rows as they are.
func sortRows[T any](rows []T, spec sortSpec, by map[string]func(a, b T) int) {
	c, ok := by[spec.Key]
	if !ok {
		return
	}
	slices.SortStableFunc(rows, func(a, b T) int {
		if spec.Desc {
			return c(b, a)
		}
		return c(a, b)
	})
}

// compareText orders names as a German phone book does (DIN 5007-1):
// case ignored, ä as a, ö as o, ü as u, ß as ss; ties by the exact text.
func compareText(a, b string) int {
	if c := strings.Compare(foldGerman(a), foldGerman(b)); c != 0 {
		return c
	}
	return strings.Compare(a, b)
}

var germanFold = strings.NewReplacer("ä", "a", "ö", "o", "ü", "u", "ß", "ss", "é", "e", "è", "e")

func foldGerman(s string) string { return germanFold.Replace(strings.ToLower(s)) }

func compareNum[N cmp.Ordered](a, b N) int { return cmp.Compare(a, b) }

// sortHeader is what a template needs for one sortable column header.
type sortHeader struct {
	Label string
	// Href is the link that sorts by this column (reversing the order if
	// it is already sorted by it).
	Href string
	// Aria is the aria-sort value: "ascending", "descending" or "none".
	Aria string
}

// sortHeaders builds the headers of a table at path with query q sorted
// by cur. cols are (key, label) pairs.
func sortHeaders(path string, q url.Values, cur sortSpec, cols ...[2]string) []sortHeader {
	out := make([]sortHeader, 0, len(cols))
	for _, c := range cols {
		v := url.Values{}
		for k, vs := range q {
			if k != "sort" && k != "richtung" && k != "seite" { // a new order starts on page 1
				v[k] = vs
			}
		}
		v.Set("sort", c[0])
		h := sortHeader{Label: c[1], Aria: "none"}
		dir := "auf"
		if c[0] == cur.Key {
			if cur.Desc {
				h.Aria = "descending"
			} else {
				h.Aria = "ascending"
				dir = "ab"
			}
		}
		v.Set("richtung", dir)
		h.Href = path + "?" + v.Encode()
		out = append(out, h)
	}
	return out
}

// CSV for German Excel: UTF-8 with a byte-order mark (without it Excel
// reads UTF-8 as Windows-1252), semicolons between fields (Excel in a
// German locale splits on ";", since "," is the decimal separator), CRLF
// line ends, fields quoted when they hold a separator, a quote or a line
// break. A field that starts with =, +, -, @, tab or CR is prefixed with
// an apostrophe so that Excel does not run it as a formula (CSV
// injection).

const utf8BOM = "\ufeff"

// csvExcel writes header and rows as described above.
func csvExcel(header []string, rows [][]string) []byte {
	var b bytes.Buffer
	b.WriteString(utf8BOM)
	line := func(fields []string) {
		for i, f := range fields {
			if i > 0 {
				b.WriteByte(';')
			}
			b.WriteString(csvField(f))
		}
		b.WriteString("\r\n")
	}
	line(header)
	for _, r := range rows {
		line(r)
	}
	return b.Bytes()
}

func csvField(f string) string {
	if f != "" && strings.ContainsRune("=+-@\t\r", rune(f[0])) {
		f = "'" + f
	}
	if strings.ContainsAny(f, ";\"\r\n") {
		return `"` + strings.ReplaceAll(f, `"`, `""`) + `"`
	}
	return f
}
