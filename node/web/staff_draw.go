package web

import (
	"fmt"
	"html/template"
	"math"
	"strings"
)

// Drawing for the agency console: the coverage map and the handover
// charts are SVG written by this code (no script, no library, nothing from
// outside the machine). Colours come from console.css classes; every mark
// also differs in shape, so the map and the charts read without colour,
// and each has a table with the same figures beside it.

// mapPoint is one municipality to draw.
type mapPoint struct {
	Lat, Lon float64
	// Class is the mark: "gap" (nobody serves it), "covered" (a provider,
	// no online channel) or "online".
	Class string
	// Label is the tooltip (<title>).
	Label string
}

// projection maps longitude/latitude to SVG coordinates: equirectangular,
// the longitudes shortened by the cosine of the middle latitude (a state
// is small enough that this looks right), fitted into a width with a
// margin; the height follows from the area's aspect.
type projection struct {
	minLon, maxLat float64
	scaleX, scaleY float64
	margin         float64
	W, H           float64
}

// newProjection fits the points into width (SVG user units). Points
// without a location (0,0) are ignored for the fit. With no located point
// it returns a projection of a square.
func newProjection(pts []mapPoint, width, margin float64) projection {
	minLat, maxLat, minLon, maxLon := math.Inf(1), math.Inf(-1), math.Inf(1), math.Inf(-1)
	for _, p := range pts {
		if !located(p) {
			continue
		}
		minLat, maxLat = math.Min(minLat, p.Lat), math.Max(maxLat, p.Lat)
		minLon, maxLon = math.Min(minLon, p.Lon), math.Max(maxLon, p.Lon)
	}
	if math.IsInf(minLat, 1) {
		return projection{W: width, H: width, scaleX: 1, scaleY: 1, margin: margin}
	}
	k := math.Cos((minLat + maxLat) / 2 * math.Pi / 180)
	spanX := (maxLon - minLon) * k
	spanY := maxLat - minLat
	if spanX <= 0 {
		spanX = 0.01
	}
	if spanY <= 0 {
		spanY = 0.01
	}
	inner := width - 2*margin
	s := inner / spanX
	h := spanY*s + 2*margin
	// A tall area (or a single row of points) must not become a
	// needle: cap the height at 1.5 × width and scale down instead.
	if h > 1.5*width {
		s = (1.5*width - 2*margin) / spanY
		h = 1.5 * width
	}
	return projection{minLon: minLon, maxLat: maxLat, scaleX: s * k, scaleY: s, margin: margin, W: width, H: h}
}

func located(p mapPoint) bool { return p.Lat != 0 || p.Lon != 0 }

// xy returns the SVG coordinates of a point: west left, north up.
func (pr projection) xy(lat, lon float64) (float64, float64) {
	return pr.margin + (lon-pr.minLon)*pr.scaleX, pr.margin + (pr.maxLat-lat)*pr.scaleY
}

// coverageMapSVG draws the municipalities as marks: gap a hollow
// triangle, covered a square, online a filled circle; a legend below
// names them. unlocated reports how many points had no coordinates (not
// drawn; they are in the table).
func coverageMapSVG(pts []mapPoint, title string) (svg template.HTML, unlocated int) {
	const width, margin, r = 640.0, 12.0, 3.2
	pr := newProjection(pts, width, margin)
	legendH := 34.0
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="vb-map" viewBox="0 0 %.0f %.0f" role="img" aria-labelledby="vb-map-title" xmlns="http://www.w3.org/2000/svg">`, width, pr.H+legendH)
	fmt.Fprintf(&b, `<title id="vb-map-title">%s</title>`, template.HTMLEscapeString(title))
	fmt.Fprintf(&b, `<rect class="vb-map__bg" x="0" y="0" width="%.0f" height="%.1f"/>`, width, pr.H)
	// Gaps last, so that they are on top: they are what the map is for.
	for _, class := range []string{"online", "covered", "gap"} {
		for _, p := range pts {
			if p.Class != class {
				continue
			}
			if !located(p) {
				unlocated++
				continue
			}
			x, y := pr.xy(p.Lat, p.Lon)
			b.WriteString(mark(class, x, y, r, p.Label))
		}
	}
	// Legend.
	y := pr.H + legendH/2
	x := margin
	for _, l := range []struct{ class, text string }{
		{"online", "online angeboten"},
		{"covered", "angeboten, nicht online"},
		{"gap", "kein Anbieter (Lücke)"},
	} {
		b.WriteString(mark(l.class, x+r, y, r*1.4, ""))
		fmt.Fprintf(&b, `<text class="vb-map__legend" x="%.1f" y="%.1f">%s</text>`, x+3*r+4, y+4, l.text)
		x += 210
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String()), unlocated
}

// mark draws one map mark of class at (x, y).
func mark(class string, x, y, r float64, label string) string {
	title := ""
	if label != "" {
		title = "<title>" + template.HTMLEscapeString(label) + "</title>"
	}
	switch class {
	case "gap":
		// Triangle pointing up, hollow with a thick outline.
		return fmt.Sprintf(`<path class="vb-mark vb-mark--gap" d="M%.1f %.1fL%.1f %.1fL%.1f %.1fZ">%s</path>`,
			x, y-r*1.2, x+r*1.1, y+r*0.8, x-r*1.1, y+r*0.8, title)
	case "covered":
		return fmt.Sprintf(`<rect class="vb-mark vb-mark--covered" x="%.1f" y="%.1f" width="%.1f" height="%.1f">%s</rect>`,
			x-r*0.85, y-r*0.85, r*1.7, r*1.7, title)
	default:
		return fmt.Sprintf(`<circle class="vb-mark vb-mark--online" cx="%.1f" cy="%.1f" r="%.1f">%s</circle>`, x, y, r, title)
	}
}

// niceMax rounds v up to 1, 2 or 5 times a power of ten (at least 1), the
// top of a chart's value axis.
func niceMax(v float64) float64 {
	if v <= 1 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if v <= m*p+1e-9*p {
			return m * p
		}
	}
	return 10 * p
}

// chartPoint is one x position of a chart: a label (a day) and a value.
type chartPoint struct {
	Label string
	Value float64
	// Missing: no value at this x (a line chart leaves a gap).
	Missing bool
}

// chart geometry.
const (
	chartW, chartH             = 640.0, 240.0
	chartLeft, chartRight      = 56.0, 12.0
	chartTop, chartBottom      = 12.0, 40.0
	chartPlotW, chartPlotH     = chartW - chartLeft - chartRight, chartH - chartTop - chartBottom
	chartTicks             int = 5 // 1, 2, 5 and 10 split into round steps
)

// scaleY maps a value to the plot's y coordinate for an axis from 0 to max.
func scaleY(v, max float64) float64 {
	if max <= 0 {
		return chartTop + chartPlotH
	}
	return chartTop + chartPlotH - v/max*chartPlotH
}

// axes draws the value axis with its ticks (format fmtTick) and the x
// labels (every step-th).
func axes(b *strings.Builder, pts []chartPoint, max float64, unit string) {
	for i := 0; i <= chartTicks; i++ {
		v := max * float64(i) / float64(chartTicks)
		y := scaleY(v, max)
		fmt.Fprintf(b, `<line class="vb-chart__grid" x1="%.0f" y1="%.1f" x2="%.0f" y2="%.1f"/>`, chartLeft, y, chartW-chartRight, y)
		fmt.Fprintf(b, `<text class="vb-chart__tick" x="%.0f" y="%.1f" text-anchor="end">%s</text>`, chartLeft-6, y+4, formatNumber(v))
	}
	fmt.Fprintf(b, `<text class="vb-chart__tick" x="4" y="%.0f">%s</text>`, chartTop+2, template.HTMLEscapeString(unit))
	step := 1
	if n := len(pts); n > 10 {
		step = (n + 9) / 10
	}
	for i, p := range pts {
		if i%step != 0 {
			continue
		}
		x := chartLeft + (float64(i)+0.5)*chartPlotW/float64(len(pts))
		fmt.Fprintf(b, `<text class="vb-chart__tick" x="%.1f" y="%.0f" text-anchor="middle">%s</text>`, x, chartH-chartBottom+16, template.HTMLEscapeString(p.Label))
	}
}

// barChartSVG draws one bar per point (values ≥ 0), labelled by title
// for assistive technology (the table beside it holds the figures).
func barChartSVG(pts []chartPoint, title, unit string) template.HTML {
	max := 0.0
	for _, p := range pts {
		max = math.Max(max, p.Value)
	}
	// Counts: at least 5, so that the ticks are whole numbers.
	max = math.Max(niceMax(max), 5)
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="vb-chart" viewBox="0 0 %.0f %.0f" role="img" aria-label="%s" xmlns="http://www.w3.org/2000/svg">`, chartW, chartH, template.HTMLEscapeString(title))
	axes(&b, pts, max, unit)
	if n := len(pts); n > 0 {
		slot := chartPlotW / float64(n)
		w := slot * 0.7
		for i, p := range pts {
			y := scaleY(p.Value, max)
			fmt.Fprintf(&b, `<rect class="vb-chart__bar" x="%.1f" y="%.1f" width="%.1f" height="%.1f"><title>%s: %s</title></rect>`,
				chartLeft+float64(i)*slot+(slot-w)/2, y, w, chartTop+chartPlotH-y, template.HTMLEscapeString(p.Label), formatNumber(p.Value))
		}
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

// lineChartSVG draws a line through the points that have a value (a
// missing point breaks the line) with a marker on each.
func lineChartSVG(pts []chartPoint, title, unit string) template.HTML {
	max := 0.0
	for _, p := range pts {
		if !p.Missing {
			max = math.Max(max, p.Value)
		}
	}
	max = niceMax(max)
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="vb-chart" viewBox="0 0 %.0f %.0f" role="img" aria-label="%s" xmlns="http://www.w3.org/2000/svg">`, chartW, chartH, template.HTMLEscapeString(title))
	axes(&b, pts, max, unit)
	slot := 0.0
	if len(pts) > 0 {
		slot = chartPlotW / float64(len(pts))
	}
	var d strings.Builder
	pen := false
	for i, p := range pts {
		if p.Missing {
			pen = false
			continue
		}
		cmd := "L"
		if !pen {
			cmd = "M"
		}
		fmt.Fprintf(&d, "%s%.1f %.1f", cmd, chartLeft+(float64(i)+0.5)*slot, scaleY(p.Value, max))
		pen = true
	}
	if d.Len() > 0 {
		fmt.Fprintf(&b, `<path class="vb-chart__line" d="%s"/>`, d.String())
	}
	for i, p := range pts {
		if p.Missing {
			continue
		}
		fmt.Fprintf(&b, `<rect class="vb-chart__dot" x="%.1f" y="%.1f" width="6" height="6"><title>%s: %s</title></rect>`,
			chartLeft+(float64(i)+0.5)*slot-3, scaleY(p.Value, max)-3, template.HTMLEscapeString(p.Label), formatNumber(p.Value))
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

// formatNumber writes v the German way with at most one decimal: 1.234,5.
func formatNumber(v float64) string {
	neg := v < 0
	v = math.Abs(v)
	r := math.Round(v*10) / 10
	whole := int64(r)
	frac := int64(math.Round((r - float64(whole)) * 10))
	s := fmt.Sprint(whole)
	var b strings.Builder
	if neg && r != 0 {
		b.WriteByte('-')
	}
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte('.')
		}
		b.WriteRune(c)
	}
	if frac != 0 {
		fmt.Fprintf(&b, ",%d", frac)
	}
	return b.String()
}
