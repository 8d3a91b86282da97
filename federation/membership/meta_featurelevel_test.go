package membership

import (
	"bytes"
	"testing"
)

// TestMetaFeatureLevel: the feature level round-trips (format 3), and the
// bytes of the fields of format 1 are unchanged, so older decoders (which
// ignore appended fields) read the rest as before.
func TestMetaFeatureLevel(t *testing.T) {
	m := testMeta("x")
	b1, err := m.Encode()
	if err != nil {
		t.Fatal(err)
	}
	for _, pub := range []string{"", "https://127.0.0.1:8443"} {
		fl := m
		fl.FeatureLevel, fl.PublicAPI = 2, pub
		b, err := fl.Encode()
		if err != nil {
			t.Fatal(err)
		}
		if b[0] != metaFormatV3 || !bytes.Equal(b[1:len(b1)], b1[1:]) {
			t.Fatalf("format 3 encoding %x does not extend format 1 %x", b, b1)
		}
		got, err := DecodeMeta(b)
		if err != nil || got != fl {
			t.Fatalf("round trip: %+v, %v", got, err)
		}
		// A decoder of format 1 sees the format-1 fields.
		old := append([]byte{metaFormatV1}, b[1:]...)
		if got, err := DecodeMeta(old); err != nil || got.NodeID != m.NodeID || got.Version != m.Version || got.FeatureLevel != 0 {
			t.Fatalf("as format 1: %+v, %v", got, err)
		}
	}
	if got, _ := DecodeMeta(b1); got.FeatureLevel != 0 {
		t.Fatalf("meta without a feature level decodes as %d", got.FeatureLevel)
	}
}
