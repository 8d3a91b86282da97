package raftlog_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/verbund/verbund/node/raftlog"
)

// fixture is a closed store on disk with several segments, a head
// compaction, a tail truncation and stable values, whose last operation
// is a StoreLogs of indexes 381-384 (the frame a torn write would hit).
type fixture struct {
	dir        string
	opts       raftlog.Options
	files      map[string][]byte // every file, as written
	names      []string          // sorted
	last       string            // the last segment
	lastFrame  int64             // offset of the final frame in last
	final      *model            // what the store serves
	beforeLast *model            // ... without the final frame
	history    []*model          // after every operation, oldest first
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	fx := &fixture{dir: t.TempDir(), opts: raftlog.Options{SegmentSize: 4096}, files: map[string][]byte{}}
	s := mustOpen(t, fx.dir, fx.opts)
	m := newModel()
	snap := func() { fx.history = append(fx.history, m.clone()) }
	snap()
	for i := uint64(1); i <= 380; i += 20 {
		b := entries(i, i+19, 1, 0)
		if err := s.StoreLogs(b); err != nil {
			t.Fatal(err)
		}
		m.store(b)
		snap()
	}
	if err := s.SetUint64([]byte("CurrentTerm"), 2); err != nil {
		t.Fatal(err)
	}
	m.stable["CurrentTerm"] = string([]byte{0, 0, 0, 0, 0, 0, 0, 2})
	snap()
	if err := s.DeleteRange(1, 60); err != nil {
		t.Fatal(err)
	}
	m.deleteRange(1, 60)
	snap()
	if err := s.DeleteRange(370, 400); err != nil {
		t.Fatal(err)
	}
	m.deleteRange(370, 400)
	snap()
	b := entries(370, 380, 2, 5)
	if err := s.StoreLogs(b); err != nil {
		t.Fatal(err)
	}
	m.store(b)
	snap()
	fx.beforeLast = m.clone()
	segs := segFiles(t, fx.dir)
	fx.last = segs[len(segs)-1]
	st, err := os.Stat(fx.last)
	if err != nil {
		t.Fatal(err)
	}
	fx.lastFrame = st.Size()
	b = entries(381, 384, 2, 6)
	if err := s.StoreLogs(b); err != nil {
		t.Fatal(err)
	}
	m.store(b)
	snap()
	fx.final = m
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if segs2 := segFiles(t, fx.dir); segs2[len(segs2)-1] != fx.last || fx.lastFrame < 1000 {
		t.Fatalf("fixture: the final frame should follow others in the last segment (%s at %d)", segs2[len(segs2)-1], fx.lastFrame)
	}
	if len(segFiles(t, fx.dir)) < 4 {
		t.Fatalf("fixture has only %d segments", len(segFiles(t, fx.dir)))
	}
	ents, err := os.ReadDir(fx.dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		name := filepath.Join(fx.dir, e.Name())
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		fx.files[name] = b
		fx.names = append(fx.names, name)
	}
	return fx
}

// restore puts every file back as written.
func (fx *fixture) restore(t *testing.T) {
	t.Helper()
	for name, b := range fx.files {
		if cur, err := os.ReadFile(name); err == nil && string(cur) == string(b) {
			continue
		}
		if err := os.WriteFile(name, b, 0o640); err != nil {
			t.Fatal(err)
		}
	}
}

// open opens the fixture's directory, returning the store (nil on error),
// the error and the lines logged.
func (fx *fixture) open() (*raftlog.Store, error, []string) {
	var c logCapture
	opts := fx.opts
	opts.Logger = c.logger()
	s, err := raftlog.Open(fx.dir, opts)
	return s, err, c.lines()
}

// checkRefusal checks that err is a CorruptError naming file, an offset not
// after the damage, and a Raft index.
func checkRefusal(err error, file string, damage int64) error {
	var ce *raftlog.CorruptError
	if !errors.Is(err, raftlog.ErrCorrupt) || !errors.As(err, &ce) {
		return fmt.Errorf("refused with %v, want a CorruptError", err)
	}
	msg := err.Error()
	if !strings.Contains(msg, file) || !strings.Contains(msg, fmt.Sprintf("offset %d", ce.Offset)) || !strings.Contains(msg, "raft index") {
		return fmt.Errorf("refusal %q does not name the file, offset and index", msg)
	}
	if ce.File != file || ce.Offset > damage {
		return fmt.Errorf("refusal names %s offset %d, damage is in %s at %d", ce.File, ce.Offset, file, damage)
	}
	return nil
}

// checkCut checks the torn-tail log line: file, offset and the indexes cut.
func checkCut(lines []string, file string, off int64, indexes string) error {
	for _, l := range lines {
		if strings.Contains(l, "torn tail") && strings.Contains(l, "file="+file) &&
			strings.Contains(l, fmt.Sprintf("offset=%d ", off)) &&
			(strings.Contains(l, "indexes="+indexes) || strings.Contains(l, `indexes="`+indexes)) {
			return nil
		}
	}
	return fmt.Errorf("no torn-tail line for %s offset %d indexes %s in %q", file, off, indexes, lines)
}

// TestTornTailIsCut: whatever part of the last batch reached the disk, the
// store comes up with the log before that batch and says what it cut.
func TestTornTailIsCut(t *testing.T) {
	fx := newFixture(t)
	orig := fx.files[fx.last]
	frameLen := int64(len(orig)) - fx.lastFrame
	cases := map[string][]byte{}
	for _, cut := range []int64{1, 2, 7, 8, 31, 32, 33, frameLen / 2, frameLen - 33, frameLen - 32, frameLen - 1} {
		cases[fmt.Sprintf("short by %d", cut)] = orig[:int64(len(orig))-cut]
	}
	flipped := append([]byte(nil), orig...)
	flipped[len(flipped)-1] ^= 1
	cases["bad checksum in the last byte"] = flipped
	zeroed := append([]byte(nil), orig...)
	clear(zeroed[fx.lastFrame+100 : fx.lastFrame+612])
	cases["a zeroed sector inside the last frame"] = zeroed
	zeroHead := append([]byte(nil), orig...)
	clear(zeroHead[fx.lastFrame : fx.lastFrame+32])
	cases["a zeroed frame header"] = zeroHead
	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			fx.restore(t)
			if err := os.WriteFile(fx.last, b, 0o640); err != nil {
				t.Fatal(err)
			}
			s, err, lines := fx.open()
			if err != nil {
				t.Fatal(err)
			}
			check(t, s, fx.beforeLast)
			indexes := "381-384"
			if name == "a zeroed frame header" || int64(len(b)) < fx.lastFrame+32 {
				indexes = "unknown"
			}
			if err := checkCut(lines, fx.last, fx.lastFrame, indexes); err != nil {
				t.Fatal(err)
			}
			// The cut is durable: the next start logs nothing, and the
			// log continues where it was cut.
			redo := entries(381, 390, 3, 8)
			if err := s.StoreLogs(redo); err != nil {
				t.Fatal(err)
			}
			s.Close()
			s, err, lines = fx.open()
			if err != nil || len(lines) != 0 {
				t.Fatalf("reopen after the cut: %v %q", err, lines)
			}
			m := fx.beforeLast.clone()
			m.store(redo)
			check(t, s, m)
			s.Close()
		})
	}
}

// TestFlippedBytes flips one byte at random offsets of every file: the
// store refuses to start naming file, offset and index, or (in the final
// frame, which a torn write could have damaged the same way) cuts that
// frame and says so. It never serves different data.
func TestFlippedBytes(t *testing.T) {
	fx := newFixture(t)
	var total int64
	for _, n := range fx.names {
		total += int64(len(fx.files[n]))
	}
	rng := rand.New(rand.NewPCG(9, 9))
	runs := 1500
	if testing.Short() {
		runs = 300
	}
	var refused, same, cut int
	for range runs {
		pos := rng.Int64N(total)
		var file string
		for _, n := range fx.names {
			if pos < int64(len(fx.files[n])) {
				file = n
				break
			}
			pos -= int64(len(fx.files[n]))
		}
		b := append([]byte(nil), fx.files[file]...)
		b[pos] ^= byte(1 + rng.IntN(255))
		if err := os.WriteFile(file, b, 0o640); err != nil {
			t.Fatal(err)
		}
		s, err, lines := fx.open()
		switch {
		case err != nil:
			if cerr := checkRefusal(err, file, pos); cerr != nil {
				t.Fatalf("flip in %s at %d: %v", file, pos, cerr)
			}
			refused++
		case diff(s, fx.final) == "":
			same++
		case file == fx.last && pos >= fx.lastFrame && diff(s, fx.beforeLast) == "":
			if err := checkCut(lines, fx.last, fx.lastFrame, ""); err != nil {
				t.Fatalf("flip in %s at %d: %v", file, pos, err)
			}
			cut++
		default:
			t.Fatalf("flip in %s at %d: store opened and serves different data: %s", file, pos, diff(s, fx.final))
		}
		if s != nil {
			s.Close()
		}
		fx.restore(t)
	}
	t.Logf("%d flips: %d refused, %d served the same entries, %d cut the final frame as torn", runs, refused, same, cut)
	if refused == 0 || cut == 0 {
		t.Fatalf("expected both refusals and cuts")
	}
}

// TestTruncatedFiles truncates each file at random lengths: a sealed
// segment or the stable file refuses to start; the last segment comes up
// with the log as it was after some earlier operation, never different.
func TestTruncatedFiles(t *testing.T) {
	fx := newFixture(t)
	rng := rand.New(rand.NewPCG(4, 2))
	for _, file := range fx.names {
		orig := fx.files[file]
		lengths := []int{0, 1, 39, 40, 41, len(orig) - 1}
		for range 40 {
			lengths = append(lengths, rng.IntN(len(orig)))
		}
		for _, n := range lengths {
			if err := os.WriteFile(file, orig[:n], 0o640); err != nil {
				t.Fatal(err)
			}
			s, err, _ := fx.open()
			switch {
			case file != fx.last:
				if cerr := checkRefusal(err, file, int64(n)); cerr != nil {
					// A sealed segment cut short is noticed at the start of
					// the next one, which names it.
					var ce *raftlog.CorruptError
					if !errors.As(err, &ce) || !strings.Contains(err.Error(), filepath.Base(file)) {
						t.Fatalf("%s truncated to %d: %v", file, n, cerr)
					}
				}
			case err != nil:
				if n >= 40 {
					t.Fatalf("last segment truncated to %d: %v", n, err)
				}
				if cerr := checkRefusal(err, file, int64(n)); cerr != nil {
					t.Fatal(cerr)
				}
			default:
				ok := false
				for _, h := range fx.history {
					if diff(s, h) == "" {
						ok = true
						break
					}
				}
				if !ok {
					t.Fatalf("last segment truncated to %d: serves a log that never was: %s", n, diff(s, fx.final))
				}
			}
			if s != nil {
				s.Close()
			}
			fx.restore(t)
		}
	}
	// A missing segment in the middle.
	segs := segFiles(t, fx.dir)
	if err := os.Remove(segs[1]); err != nil {
		t.Fatal(err)
	}
	_, err, _ := fx.open()
	if !errors.Is(err, raftlog.ErrCorrupt) || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("missing segment: %v", err)
	}
}

// frameOffsets walks a segment's frames (header 40 bytes, frame header 32
// bytes with the payload length at offset 4).
func frameOffsets(b []byte) []int {
	var offs []int
	for off := 40; off+32 <= len(b); off += 32 + int(binary.BigEndian.Uint32(b[off+4:])) {
		offs = append(offs, off)
	}
	return offs
}

// TestFrameCutOut removes one whole, valid frame from the middle of a
// segment (a lost block that happens to fall on frame boundaries): the
// checksums all match, the indexes do not, and the store refuses.
func TestFrameCutOut(t *testing.T) {
	fx := newFixture(t)
	tested := 0
	for _, file := range segFiles(t, fx.dir) {
		orig := fx.files[file]
		offs := frameOffsets(orig)
		// Cut out an entries frame (type 1) followed by another frame.
		cut := -1
		for i := range len(offs) - 1 {
			if orig[offs[i]] == 1 {
				cut = i
			}
		}
		if cut < 0 {
			continue
		}
		tested++
		end := len(orig)
		if cut+1 < len(offs) {
			end = offs[cut+1]
		}
		b := append(append([]byte(nil), orig[:offs[cut]]...), orig[end:]...)
		if err := os.WriteFile(file, b, 0o640); err != nil {
			t.Fatal(err)
		}
		_, err, _ := fx.open()
		if cerr := checkRefusal(err, file, int64(offs[cut])); cerr != nil || !strings.Contains(err.Error(), "missing") && !strings.Contains(err.Error(), "gap") {
			t.Fatalf("frame cut out of %s: %v (%v)", file, err, cerr)
		}
		fx.restore(t)
	}
	if tested < 2 {
		t.Fatalf("only %d segments with two frames or more", tested)
	}
}
