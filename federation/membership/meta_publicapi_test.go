package membership

import (
	"bytes"
	"testing"
)

// TestMetaPublicAPI checks that a Meta with PublicAPI round-trips (format
// 2), and that a decoder of format 1 would read its first six fields
// unchanged: format 2 only appends.
func TestMetaPublicAPI(t *testing.T) {
	m := Meta{NodeID: "n1", OrgID: "o", Role: RoleVoter, APIAddr: "https://127.0.0.1:17201", RaftAddr: "127.0.0.1:17001", Version: "1.0.0", PublicAPI: "http://127.0.0.1:18081"}
	b, err := m.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if b[0] != metaFormatV2 {
		t.Fatalf("format %d, want %d", b[0], metaFormatV2)
	}
	got, err := DecodeMeta(b)
	if err != nil || got != m {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	// The same bytes as format 1 (what an older node decodes): the first
	// six fields, PublicAPI ignored.
	v1 := bytes.Clone(b)
	v1[0] = metaFormatV1
	old, err := DecodeMeta(v1)
	want := m
	want.PublicAPI = ""
	if err != nil || old != want {
		t.Fatalf("as format 1: %+v, %v", old, err)
	}
	// Without PublicAPI the encoding stays format 1.
	if b, _ := want.Encode(); b[0] != metaFormatV1 {
		t.Fatalf("format %d without PublicAPI, want 1", b[0])
	}
}
