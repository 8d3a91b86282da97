package sampledata

import (
	"html"
	"strings"
	"unicode/utf8"
)

// blockTags end a line of text.
var blockTags = map[string]bool{
	"p": true, "br": true, "li": true, "div": true, "ul": true, "ol": true,
	"h1": true, "h2": true, "h3": true, "h4": true, "h5": true, "h6": true,
	"tr": true, "table": true, "blockquote": true, "dd": true, "dt": true, "hr": true,
}

// lineBreaks turns line breaks in HTML source into the white space they are.
var lineBreaks = strings.NewReplacer("\r\n", " ", "\n", " ", "\r", " ")

// htmlLines strips the tags of a DLDB HTML fragment and returns its lines
// of text: block elements and <br> end a line, entities are decoded and
// whitespace (including no-break and zero-width spaces) is collapsed. Empty
// lines are kept (as "") where the markup has an empty paragraph or a
// double <br>, since they separate groups of fee lines.
func htmlLines(s string) []string {
	var b strings.Builder
	skip := "" // inside <script> or <style>
	for i := 0; i < len(s); {
		c := s[i]
		if c != '<' {
			j := strings.IndexByte(s[i:], '<')
			if j < 0 {
				j = len(s) - i
			}
			if skip == "" {
				// Line breaks in the source are white space in HTML.
				b.WriteString(lineBreaks.Replace(s[i : i+j]))
			}
			i += j
			continue
		}
		if strings.HasPrefix(s[i:], "<!--") {
			end := strings.Index(s[i+4:], "-->")
			if end < 0 {
				break
			}
			i += 4 + end + 3
			continue
		}
		end := strings.IndexByte(s[i:], '>')
		if end < 0 {
			// A lone '<' is text.
			if skip == "" {
				b.WriteString(s[i:])
			}
			break
		}
		tag := s[i+1 : i+end]
		i += end + 1
		closing := strings.HasPrefix(tag, "/")
		name := strings.ToLower(strings.TrimLeft(tag, "/"))
		if k := strings.IndexAny(name, " \t\r\n/"); k >= 0 {
			name = name[:k]
		}
		switch {
		case name == "script" || name == "style":
			if closing {
				skip = ""
			} else {
				skip = name
			}
		case blockTags[name]:
			b.WriteByte('\n')
		}
	}
	text := html.UnescapeString(b.String())
	raw := strings.Split(text, "\n")
	lines := make([]string, 0, len(raw))
	blank := true // collapse runs of empty lines, drop leading ones
	for _, l := range raw {
		l = cleanSpace(l)
		if l == "" {
			if !blank {
				lines = append(lines, "")
			}
			blank = true
			continue
		}
		lines = append(lines, l)
		blank = false
	}
	for len(lines) > 0 && lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	return lines
}

// cleanSpace drops zero-width characters and collapses white space.
func cleanSpace(s string) string {
	s = strings.Map(func(r rune) rune {
		switch r {
		case '\u200b', '\u200c', '\u200d', '\u2060', '\ufeff', '\u00ad':
			return -1
		}
		return r
	}, s)
	return strings.Join(strings.Fields(s), " ")
}

// plainText renders an HTML fragment as one line of text, capped at max
// bytes (cut at a word boundary, marked with "…").
func plainText(s string, max int) string {
	var parts []string
	for _, l := range htmlLines(s) {
		if l != "" {
			parts = append(parts, l)
		}
	}
	return capText(strings.Join(parts, " "), max)
}

// capText shortens s to at most max bytes of valid UTF-8.
func capText(s string, max int) string {
	if len(s) <= max {
		return s
	}
	const ell = "…"
	cut := max - len(ell)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	if sp := strings.LastIndexByte(s[:cut], ' '); sp > cut/2 {
		cut = sp
	}
	return strings.TrimRight(s[:cut], " ") + ell
}
