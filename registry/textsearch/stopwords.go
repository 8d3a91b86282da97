package textsearch

import "strings"

// stopWordList holds German function words that carry no meaning for a
// catalogue search. They are folded with [Fold] at start-up, so "für",
// "fuer" and "fur" are all stop words. Words whose folded form collides with
// a content word are left out on purpose ("wäre" would fold to "ware",
// "waren" is also "goods").
const stopWordList = `
ab aber alle allem allen aller alles als also am an andere anderem anderen
anderer anderes auch auf aus bei beim bereits bin bis bist bitte bzw da dabei
dadurch daher dafür dagegen damit dann daran darauf daraus darf darin darüber
das dass daß davon dazu dein deine deinem deinen deiner dem den denen denn der
deren des dessen dich die dies diese diesem diesen dieser dieses dir doch dort
du durch ein eine einem einen einer eines einige einigem einigen einiger
einiges er es etc etwa euch euer eure eurem euren eurer falls für gegen ggf
habe haben hat hatte hatten hätte hätten hier hin ich ihm ihn ihnen ihr ihre
ihrem ihren ihrer ihres im in ins ist ja je jede jedem jeden jeder jedes
jedoch jene jenem jenen jener jenes kann kein keine keinem keinen keiner
keines können könnte man manche manchem manchen mancher manches mehr mein
meine meinem meinen meiner mich mir mit muss musste müssen nach nicht noch nun
nur ob oder ohne sehr sei sein seine seinem seinen seiner seines seit sich sie
sind so solche solchem solchen solcher solches soll sollen sollte sollten
sondern sowie über um und uns unser unsere unserem unseren unserer usw viel
vom von vor war was weil welche welchem welchen welcher welches wenn wer werde
werden wie wieder will wir wird wo wurde wurden würde würden zu zum zur zwar
zwischen
`

var stopWords = func() map[string]struct{} {
	m := make(map[string]struct{})
	for _, w := range strings.Fields(stopWordList) {
		m[Fold(w)] = struct{}{}
	}
	return m
}()

// IsStopWord reports whether the folded form of w is a stop word.
func IsStopWord(w string) bool {
	_, ok := stopWords[Fold(w)]
	return ok
}
