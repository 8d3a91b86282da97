package registry

import (
	"strings"
	"testing"

	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
)

// The per-command work the leader no longer does twice (ParseCommand)
// and every replica no longer does per verification (parsing the
// issuer's JWK):
//
//	go test -run '^$' -bench 'ParseCommand|ParseKey' -count 6 ./registry
func BenchmarkParseCommand(b *testing.B) {
	w := newWorld(b)
	o := offering(arsMuni, leikaGewerbe, arsMuni)
	o.Name = "Angebot " + strings.Repeat("x", 200)
	o.Channels = []*registryv1.Channel{{Kind: registryv1.ChannelKind_CHANNEL_KIND_ONLINE, Url: "https://example.org/1", Note: strings.Repeat("x", 300)}}
	raw := w.signed(w.muni, mPutOffering(o))
	b.SetBytes(int64(len(raw)))
	for b.Loop() {
		if _, err := ParseCommand(raw); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseKey(b *testing.B) {
	w := newWorld(b)
	pk := w.muni.rec.GetKeys()[0]
	b.Run("uncached", func(b *testing.B) {
		for b.Loop() {
			if _, err := parseKeyUncached(pk); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("cached", func(b *testing.B) {
		for b.Loop() {
			if _, err := parseKey(pk); err != nil {
				b.Fatal(err)
			}
		}
	})
}
