package textsearch

import (
	"html"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Fold lower-cases s and folds German umlauts and ß so that "Führerschein",
// "FUEHRERSCHEIN" and "fuhrerschein" compare equal. It also strips HTML
// tags and decodes entities. See the package documentation for the exact
// rules. Punctuation is kept; runs of whitespace become one space and the
// result is trimmed. The result is valid UTF-8 even if s is not.
//
// For text without '<' and '&', Fold(Fold(s)) == Fold(s).
func Fold(s string) string {
	if strings.IndexByte(s, '<') >= 0 {
		s = stripTags(s)
	}
	if strings.IndexByte(s, '&') >= 0 {
		s = html.UnescapeString(s)
	}
	return foldText(s)
}

// stripTags replaces HTML tags with a space and drops the contents of
// <script> and <style> elements. A '<' that does not start a tag (not
// followed by a letter, '/', '!' or '?', or never closed by '>') is kept.
// It runs in linear time: every byte is looked at a bounded number of times.
func stripTags(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	lastGT := strings.LastIndexByte(s, '>')
	i := 0
	for {
		j := strings.IndexByte(s[i:], '<')
		if j < 0 {
			b.WriteString(s[i:])
			break
		}
		j += i
		b.WriteString(s[i:j])
		if j+1 >= len(s) || !isTagStart(s[j+1]) || j > lastGT {
			b.WriteByte('<')
			i = j + 1
			continue
		}
		end := j + strings.IndexByte(s[j:], '>') // exists: j < lastGT
		b.WriteByte(' ')
		i = end + 1
		if name := tagName(s[j+1 : end]); name == "script" || name == "style" {
			k := indexFold(s[i:], "</"+name)
			if k < 0 {
				break // unterminated: drop the rest
			}
			i += k // the closing tag is stripped by the next round
		}
	}
	return b.String()
}

func isTagStart(c byte) bool {
	return c == '/' || c == '!' || c == '?' || ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z')
}

// tagName returns the lower-cased name of an opening tag body ("script
// type=x" -> "script"); closing tags and declarations yield "".
func tagName(body string) string {
	n := 0
	for n < len(body) && (('a' <= body[n] && body[n] <= 'z') || ('A' <= body[n] && body[n] <= 'Z')) {
		n++
	}
	return strings.ToLower(body[:n])
}

// indexFold is strings.Index for an ASCII, lower-case needle, ignoring the
// ASCII case of s.
func indexFold(s, needle string) int {
	for i := 0; i+len(needle) <= len(s); i++ {
		if s[i] == needle[0] && strings.EqualFold(s[i:i+len(needle)], needle) {
			return i
		}
	}
	return -1
}

// foldText applies the character folding of [Fold] to text without markup.
func foldText(s string) string {
	f := folder{}
	f.b.Grow(len(s))
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			i++
			switch {
			case 'a' <= c && c <= 'z', '0' <= c && c <= '9':
				f.emit(rune(c))
			case 'A' <= c && c <= 'Z':
				f.emit(rune(c + 'a' - 'A'))
			case c <= ' ' || c == 0x7f:
				f.space = true
			default:
				f.emit(rune(c))
			}
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		i += size
		f.rune(r)
	}
	return f.b.String()
}

type folder struct {
	b          strings.Builder
	space      bool // a space is pending before the next emitted rune
	prev, last rune // the last two emitted runes
}

// rune folds one non-ASCII rune (or utf8.RuneError for invalid input).
func (f *folder) rune(r rune) {
	switch {
	case r == utf8.RuneError, unicode.IsSpace(r), unicode.IsControl(r):
		f.space = true
		return
	case unicode.In(r, unicode.Mn, unicode.Me, unicode.Cf):
		return // combining marks (decomposed umlauts), soft hyphen, ZWJ, BOM
	case r == '\u2010' || r == '\u2011': // hyphen, non-breaking hyphen
		f.emit('-')
		return
	}
	r = unicode.ToLower(r)
	if r < 0x80 { // e.g. K (Kelvin sign), İ
		f.emit(r)
		return
	}
	if rep, ok := latinFold[r]; ok {
		for _, c := range rep {
			f.emit(c)
		}
		return
	}
	f.emit(r)
}

// emit writes r, collapsing ae/oe/ue to a/o/u unless the a/o/u follows
// another vowel: "eue" and "aue" are a diphthong plus e ("Steuer", "Bauer",
// "neue") and collapsing them would defeat the stemmer ("Steuern" must stem
// like "Steuer"). Transliterated umlauts after a vowel ("geuebt") are rare.
func (f *folder) emit(r rune) {
	if f.space {
		f.space = false
		if f.b.Len() > 0 {
			f.b.WriteByte(' ')
			f.prev, f.last = f.last, ' '
		}
	}
	if r == 'e' && (f.last == 'a' || f.last == 'o' || f.last == 'u') && !isVowel(f.prev) {
		return
	}
	f.b.WriteRune(r)
	f.prev, f.last = f.last, r
}

func isVowel(r rune) bool {
	return r == 'a' || r == 'e' || r == 'i' || r == 'o' || r == 'u'
}

// latinFold maps lower-case letters with diacritics to their base letters.
// German umlauts and ß are the point; the rest keeps names such as "Café"
// or "Łódź" findable without the accents.
var latinFold = map[rune]string{
	'ä': "a", 'ö': "o", 'ü': "u", 'ß': "ss",
	'à': "a", 'á': "a", 'â': "a", 'ã': "a", 'å': "a", 'ā': "a", 'ă': "a", 'ą': "a",
	'æ': "ae", 'ç': "c", 'ć': "c", 'č': "c", 'ď': "d", 'đ': "d", 'ð': "d",
	'è': "e", 'é': "e", 'ê': "e", 'ë': "e", 'ē': "e", 'ė': "e", 'ę': "e", 'ě': "e",
	'ì': "i", 'í': "i", 'î': "i", 'ï': "i", 'ī': "i", 'į': "i", 'ı': "i",
	'ł': "l", 'ľ': "l", 'ĺ': "l", 'ñ': "n", 'ń': "n", 'ň': "n",
	'ò': "o", 'ó': "o", 'ô': "o", 'õ': "o", 'ø': "o", 'ō': "o", 'ő': "o", 'œ': "oe",
	'ŕ': "r", 'ř': "r", 'ś': "s", 'š': "s", 'ş': "s", 'ș': "s",
	'ť': "t", 'ţ': "t", 'ț': "t", 'þ': "th",
	'ù': "u", 'ú': "u", 'û': "u", 'ū': "u", 'ů': "u", 'ű': "u", 'ų': "u",
	'ý': "y", 'ÿ': "y", 'ź': "z", 'ż': "z", 'ž': "z",
}
