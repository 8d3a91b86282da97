// Package textsearch is the German text analysis behind the service
// catalogue search: it turns service names, keywords, life situations and
// descriptions into index terms, turns a user query into lookup terms, and
// ranks matches. It has no storage; the registry stores the terms produced by
// [Terms] as badger keys (x/st/<term>/<leika> -> [Fields] mask) and finds them
// by prefix scans with the terms produced by [QueryTerms].
//
// # Pipeline
//
// Indexing and querying run exactly the same pipeline, so whatever a rule
// does to a word it does on both sides:
//
//  1. Markup: HTML tags are replaced by a space (the contents of <script>
//     and <style> are dropped) and entities are decoded (&nbsp;, &uuml;,
//     &#252;, ...).
//  2. [Fold]: lower-case; ä→a, ö→o, ü→u, ß→ss, other Latin accents are
//     stripped (é→e, ç→c, ø→o, æ→ae, ...); combining marks (decomposed
//     umlauts) and invisible format characters (soft hyphen, zero-width
//     joiners, BOM) are removed; then the transliterations ae/oe/ue collapse
//     to a/o/u ("FUEHRERSCHEIN", "Führerschein" and "fuhrerschein" all fold
//     to "fuhrerschein"; "Strasse" and "Straße" to "strasse"). Precisely: an
//     "e" directly after a/o/u is dropped unless that a/o/u itself follows a
//     vowel, because "eue"/"aue" are a diphthong plus e ("Steuer", "Bauer",
//     "neue") and must stay intact for the stemmer ("Steuern" → "steu").
//     The rule also hits a few ordinary words ("aktuell" → "aktull",
//     "Poesie" → "posie"); that is harmless because both sides do it.
//     Umlauts are folded before stemming, so the Snowball stemmer's own
//     umlaut and ß handling never sees a difference between spellings.
//     Whitespace, control characters and invalid UTF-8 become single spaces.
//  3. Tokens are maximal runs of letters and digits. A hyphen between two
//     tokens ("Gewerbe-Anmeldung", "Kfz-Zulassung") makes a compound: each
//     part is indexed, and so is the joined form ("gewerbeanmeldung"), so
//     that the hyphenated and the closed spelling find each other. A "." or
//     "," between digits ("1.000", "01.01.2024") joins a number the same
//     way.
//  4. Tokens of one character and German stop words ("der", "und", "für",
//     ...) are dropped; terms are capped at [MaxTermLen] bytes.
//  5. Words without digits are reduced with the Snowball German stemmer
//     ("anmelden", "Anmeldung" → "anmeld"). The index also keeps the
//     unstemmed word when it differs from the stem; queries use the stem
//     only. Numbers are kept as they are.
//
// # Why prefix matching of stems
//
// A query term matches every index term it is a prefix of. The Snowball stem
// of a word is always a prefix of the (folded) word, so the stem of a query
// word finds all inflections of it ("ummelden" finds "Ummeldung"), a
// half-typed word finds the full one ("Anmeldu" finds "Anmeldung" through the
// unstemmed index term), and a word finds the compounds it starts
// ("Hund" finds "Hundesteuer", "Gewerbe" finds "Gewerbeanmeldung"). German
// compounds put the modifier first, so this covers the common case of
// searching by the first element. It does not find a compound by its last
// element ("Steuer" does not find "Hundesteuer"); that would need a
// decompounding dictionary and is left to keywords.
//
// # Scoring
//
// [Score] ranks a document from the fields each query term matched (see
// [TermMatch]): the number of matching query terms decides first, then
// the field (name > keywords > life situations > description) and exact
// term matches over prefix matches.
package textsearch
