package raftlog

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
)

// TestIndexGapRefused writes a segment by hand whose frames chain
// correctly but whose second entries frame skips an index (a writer bug,
// or frames spliced from another log): Open refuses it.
func TestIndexGapRefused(t *testing.T) {
	frame := func(b []byte, first uint64, n int, prev uint32) ([]byte, uint32) {
		var payload []byte
		for i := range n {
			payload = appendEntry(payload, &raft.Log{Index: first + uint64(i), Term: 1, Data: []byte("x")})
		}
		start := len(b)
		b = appendFrameHeader(b, frameHeader{typ: frameEntries, len: uint32(len(payload)), index: first, count: uint32(n), prev: prev})
		crc := be.Uint32(b[start+frameHeaderSize-4:])
		return append(b, payload...), crc
	}
	for _, tc := range []struct {
		name   string
		second uint64
		ok     bool
	}{{"contiguous", 4, true}, {"gap", 5, false}, {"overlap", 3, false}} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			b := appendSegHeader(nil, segHeader{seq: 1, next: 1})
			b, c := frame(b, 1, 3, 0)
			b, _ = frame(b, tc.second, 2, c)
			b, _ = frame(b, tc.second+2, 1, 0) // never reached when refused
			if err := os.WriteFile(filepath.Join(dir, segName(1)), b, 0o640); err != nil {
				t.Fatal(err)
			}
			s, err := Open(dir, Options{})
			if tc.ok {
				// The third frame breaks the chain: refused too, but later.
				if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "chain") {
					t.Fatalf("want a chain refusal at the third frame, got %v", err)
				}
				return
			}
			if s != nil {
				s.Close()
			}
			var ce *CorruptError
			if !errors.As(err, &ce) || !strings.Contains(err.Error(), "gap or out of order") || ce.Index != 4 {
				t.Fatalf("got %v", err)
			}
		})
	}
}
