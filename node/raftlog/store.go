package raftlog

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/hashicorp/raft"
)

// Sentinel errors. Callers tell cases apart with errors.Is.
var (
	// ErrCorrupt wraps every *CorruptError: the files on disk are not a log
	// this package wrote (a flipped or lost byte, a missing segment). Open
	// refuses to start rather than serve different data; see doc.go for
	// recovery.
	ErrCorrupt = errors.New("raftlog: corrupt log")
	// ErrKeyNotFound is returned by Get for a missing key. Raft recognises a
	// missing key only by this exact text.
	ErrKeyNotFound = errors.New("not found")
	// ErrClosed is returned by every method after Close.
	ErrClosed = errors.New("raftlog: store closed")
	// ErrFailed is wrapped by every write after a sync failed: the kernel
	// may have dropped the unsynced pages, so what is on disk is unknown
	// until the store is reopened (and the tail checked).
	ErrFailed = errors.New("raftlog: store failed, reopen it")
)

// CorruptError says where the log is damaged: the file, the byte offset of
// the damaged frame (or the end of the file that lacks data) and the Raft
// index that was expected there (0 when none applies, as in the stable
// file).
type CorruptError struct {
	File   string
	Offset int64
	Index  uint64
	Reason string
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("raftlog: corrupt log: %s at offset %d (raft index %d): %s", e.File, e.Offset, e.Index, e.Reason)
}

// Unwrap makes errors.Is(err, ErrCorrupt) true.
func (e *CorruptError) Unwrap() error { return ErrCorrupt }

// Options configures a Store. The zero value is the production setting.
type Options struct {
	// FS is the file layer; nil means the operating system (OS{}).
	FS FS
	// Logger receives the torn-tail repair line and other warnings; nil
	// means slog.Default().
	Logger *slog.Logger
	// SegmentSize is the size after which a new segment file is started;
	// 0 means 64 MiB. A batch larger than this gets a segment of its own.
	SegmentSize int64
	// NoSync skips every fsync. FOR TESTS ONLY: it is the control run that
	// power-loss tests must catch. A store opened with it loses
	// acknowledged entries on a power cut.
	NoSync bool
}

const defaultSegmentSize = 64 << 20

// Store is a hashicorp/raft LogStore and StableStore kept in segment files
// of checksummed frames in one directory. It is safe for concurrent use:
// writes (StoreLogs, DeleteRange, Set) are serialised; reads (GetLog,
// FirstIndex, LastIndex, Get) run concurrently with each other and are not
// blocked by a write's fsync.
type Store struct {
	dir  string
	fs   FS
	log  *slog.Logger
	opts Options

	wmu    sync.Mutex // serialises writers; held across write+sync
	active *segment   // last segment, appended to; nil before the first write
	tail   int64      // end of the active segment's valid data
	next   uint64     // index the next entries frame must start at (0: any)
	chain  uint32     // checksum of the last frame header written
	buf    []byte
	failed error

	mu     sync.RWMutex // guards idx, segs, closed against readers
	idx    index
	segs   []*segment
	closed bool

	smu    sync.Mutex // guards stable
	stable map[string][]byte
}

var (
	_ raft.LogStore    = (*Store)(nil)
	_ raft.StableStore = (*Store)(nil)
	_ io.Closer        = (*Store)(nil)
)

type segment struct {
	seq  uint64
	name string // full path
	f    File
	max  uint64 // highest entry index ever written to it (live or not)
}

func segName(seq uint64) string { return fmt.Sprintf("seg-%016x.wal", seq) }

func parseSegName(name string) (uint64, bool) {
	s, ok := strings.CutPrefix(name, "seg-")
	if !ok {
		return 0, false
	}
	s, ok = strings.CutSuffix(s, ".wal")
	if !ok || len(s) != 16 {
		return 0, false
	}
	seq, err := strconv.ParseUint(s, 16, 64)
	return seq, err == nil
}

// Open opens the log in dir, creating it if needed. It verifies every
// frame of every segment: a torn tail (an incomplete or unreadable last
// frame of the last segment, nothing valid after it) is cut and logged;
// any other damage makes Open fail with a *CorruptError (errors.Is
// ErrCorrupt) and changes nothing on disk.
func Open(dir string, opts Options) (*Store, error) {
	if opts.FS == nil {
		opts.FS = OS{}
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.SegmentSize <= 0 {
		opts.SegmentSize = defaultSegmentSize
	}
	s := &Store{dir: dir, fs: opts.FS, log: opts.Logger, opts: opts}
	if err := s.fs.MkdirAll(dir); err != nil {
		return nil, fmt.Errorf("raftlog: open %s: %w", dir, err)
	}
	if err := s.load(); err != nil {
		for _, seg := range s.segs {
			seg.f.Close()
		}
		return nil, err
	}
	return s, nil
}

func (s *Store) load() error {
	names, err := s.fs.ReadDir(s.dir)
	if err != nil {
		return fmt.Errorf("raftlog: open %s: %w", s.dir, err)
	}
	var seqs []uint64
	var tmp bool
	for _, n := range names {
		if strings.HasSuffix(n, ".tmp") {
			// An unfinished segment creation or stable write: never
			// renamed into place, so never acknowledged.
			if err := s.fs.Remove(filepath.Join(s.dir, n)); err != nil {
				return fmt.Errorf("raftlog: remove %s: %w", n, err)
			}
			tmp = true
			continue
		}
		if seq, ok := parseSegName(n); ok {
			seqs = append(seqs, seq)
		}
	}
	if tmp {
		if err := s.sync(s.fs.SyncDir, s.dir); err != nil {
			return fmt.Errorf("raftlog: sync %s: %w", s.dir, err)
		}
	}
	if err := s.loadStable(); err != nil {
		return err
	}
	r := replayer{s: s}
	for i, seq := range seqs {
		name := filepath.Join(s.dir, segName(seq))
		if i > 0 && seq != seqs[i-1]+1 {
			return &CorruptError{File: name, Offset: 0, Index: s.next,
				Reason: fmt.Sprintf("segment %d follows segment %d: segments missing", seq, seqs[i-1])}
		}
		f, err := s.fs.OpenFile(name, os.O_RDWR)
		if err != nil {
			return fmt.Errorf("raftlog: open %s: %w", name, err)
		}
		seg := &segment{seq: seq, name: name, f: f}
		s.segs = append(s.segs, seg)
		if err := r.segment(seg, i == 0, i == len(seqs)-1); err != nil {
			return err
		}
	}
	if n := len(s.segs); n > 0 {
		s.active = s.segs[n-1]
	}
	return nil
}

// replayer rebuilds the index from the segments, in order.
type replayer struct {
	s *Store
}

func (r *replayer) segment(seg *segment, first, last bool) error {
	s := r.s
	size, err := seg.f.Size()
	if err != nil {
		return fmt.Errorf("raftlog: %s: %w", seg.name, err)
	}
	data := make([]byte, size)
	if _, err := seg.f.ReadAt(data, 0); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("raftlog: read %s: %w", seg.name, err)
	}
	corrupt := func(off int64, idx uint64, format string, a ...any) error {
		return &CorruptError{File: seg.name, Offset: off, Index: idx, Reason: fmt.Sprintf(format, a...)}
	}
	h, err := parseSegHeader(data)
	if err != nil {
		return corrupt(0, s.next, "%v", err)
	}
	if h.seq != seg.seq {
		return corrupt(0, s.next, "segment header says number %d", h.seq)
	}
	if first {
		s.next, s.chain = h.next, h.chain
	} else if h.next != s.next || h.chain != s.chain {
		prev := filepath.Base(s.segs[len(s.segs)-2].name)
		return corrupt(0, s.next, "segment does not continue %s (it expects index %d next, %s ends before index %d): data missing at the end of %s",
			prev, h.next, prev, s.next, prev)
	}
	off := int64(segHeaderSize)
	for off < size {
		fh, ok := parseFrameHeader(data[off:])
		if !ok {
			if off+frameHeaderSize > size {
				if last {
					return r.cut(seg, off, size, "short frame header", nil)
				}
				return corrupt(off, s.next, "short frame header at the end of a sealed segment")
			}
			if last && !validHeaderAfter(data, off+1) {
				return r.cut(seg, off, size, "unreadable frame header, nothing valid after it", nil)
			}
			return corrupt(off, s.next, "frame header checksum mismatch")
		}
		end := off + frameHeaderSize + int64(fh.len)
		if end > size {
			if last {
				return r.cut(seg, off, size, "short frame", &fh)
			}
			return corrupt(off, s.next, "frame runs past the end of a sealed segment")
		}
		locs, err := r.entries(seg, data[off+frameHeaderSize:end], off+frameHeaderSize, fh)
		if err != nil {
			if last && end == size {
				return r.cut(seg, off, size, err.Error(), &fh)
			}
			return corrupt(off, fh.index, "%v", err)
		}
		if fh.prev != s.chain {
			return corrupt(off, s.next, "frame does not follow the previous one (chain checksum mismatch): a frame is missing")
		}
		switch fh.typ {
		case frameEntries:
			if s.next != 0 && fh.index != s.next {
				return corrupt(off, s.next, "entries start at index %d, expected %d (gap or out of order)", fh.index, s.next)
			}
		case frameSeekEntries, frameSeek:
			s.idx.truncateFrom(fh.index)
		case frameHead:
			s.idx.dropBefore(fh.index)
		}
		switch fh.typ {
		case frameEntries, frameSeekEntries:
			s.idx.append(fh.index, locs)
			s.next = fh.index + uint64(fh.count)
			seg.max = max(seg.max, s.next-1)
		case frameSeek:
			s.next = fh.index
		}
		s.chain = fh.crc
		off = end
	}
	if last {
		s.tail = size
	}
	return nil
}

// entries checks an entries payload and returns where each entry lives.
func (r *replayer) entries(seg *segment, p []byte, base int64, fh frameHeader) ([]loc, error) {
	if fh.typ != frameEntries && fh.typ != frameSeekEntries {
		return nil, nil
	}
	locs := make([]loc, 0, fh.count)
	for pos := 0; pos < len(p); {
		n, err := entryLen(p[pos:])
		if err != nil {
			return nil, fmt.Errorf("entry %d of frame: %w", len(locs), err)
		}
		want := fh.index + uint64(len(locs))
		if got := entryIndex(p[pos:]); got != want {
			return nil, fmt.Errorf("entry has index %d, frame says %d", got, want)
		}
		locs = append(locs, loc{seg: seg, off: base + int64(pos), n: uint32(n)})
		pos += n
	}
	if len(locs) != int(fh.count) {
		return nil, fmt.Errorf("frame holds %d entries, header says %d", len(locs), fh.count)
	}
	return locs, nil
}

// cut repairs a torn tail: it truncates the last segment at off, syncs,
// and logs what was cut.
func (r *replayer) cut(seg *segment, off, size int64, reason string, fh *frameHeader) error {
	s := r.s
	cut := "unknown (frame header unreadable)"
	if fh != nil {
		switch fh.typ {
		case frameEntries, frameSeekEntries:
			cut = fmt.Sprintf("%d-%d", fh.index, fh.index+uint64(fh.count)-1)
		case frameSeek:
			cut = fmt.Sprintf("none (a tail truncation from %d)", fh.index)
		case frameHead:
			cut = fmt.Sprintf("none (a head compaction to %d)", fh.index)
		}
	}
	if err := seg.f.Truncate(off); err != nil {
		return fmt.Errorf("raftlog: cut torn tail of %s at %d: %w", seg.name, off, err)
	}
	if err := s.sync(func(string) error { return seg.f.Sync() }, seg.name); err != nil {
		return fmt.Errorf("raftlog: cut torn tail of %s at %d: %w", seg.name, off, err)
	}
	s.log.Warn("raft log: cut torn tail (a write that was never acknowledged)",
		"file", seg.name, "offset", off, "bytes", size-off, "indexes", cut, "reason", reason)
	s.tail = off
	return nil
}

// validHeaderAfter reports whether any valid frame header starts at or
// after from: then the damage before it is not a torn tail.
func validHeaderAfter(data []byte, from int64) bool {
	for p := from; p+frameHeaderSize <= int64(len(data)); p++ {
		if _, ok := parseFrameHeader(data[p:]); ok {
			return true
		}
	}
	return false
}

func (s *Store) sync(f func(string) error, name string) error {
	if s.opts.NoSync {
		return nil
	}
	return f(name)
}

// FirstIndex returns the first index of the log, 0 if it is empty.
func (s *Store) FirstIndex() (uint64, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return 0, ErrClosed
	}
	return s.idx.first(), nil
}

// LastIndex returns the last index of the log, 0 if it is empty.
func (s *Store) LastIndex() (uint64, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return 0, ErrClosed
	}
	return s.idx.last(), nil
}

// GetLog reads entry index into out, verifying its checksum; it returns
// raft.ErrLogNotFound if the entry is not in the log.
func (s *Store) GetLog(index uint64, out *raft.Log) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	l, ok := s.idx.get(index)
	if !ok {
		return raft.ErrLogNotFound
	}
	b := make([]byte, l.n)
	if _, err := l.seg.f.ReadAt(b, l.off); err != nil {
		return fmt.Errorf("raftlog: read index %d from %s: %w", index, l.seg.name, err)
	}
	n, err := entryLen(b)
	if err == nil && (n != len(b) || entryIndex(b) != index) {
		err = errors.New("entry is not the one indexed")
	}
	if err != nil {
		return &CorruptError{File: l.seg.name, Offset: l.off, Index: index, Reason: err.Error()}
	}
	decodeEntry(b, out)
	return nil
}

// StoreLog stores one entry, durably.
func (s *Store) StoreLog(l *raft.Log) error { return s.StoreLogs([]*raft.Log{l}) }

// StoreLogs appends entries with consecutive indexes as one frame: one
// write and one fsync, done before it returns. The first index must be
// above LastIndex (delete a conflicting tail with DeleteRange first); a
// batch that does not directly follow LastIndex (after a snapshot install)
// leaves a gap, the entries before it stay readable.
func (s *Store) StoreLogs(logs []*raft.Log) error {
	if len(logs) == 0 {
		return nil
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if err := s.writable(); err != nil {
		return err
	}
	first := logs[0].Index
	size := 0
	for i, l := range logs {
		if l.Index != first+uint64(i) {
			return fmt.Errorf("raftlog: store logs: index %d at position %d of a batch starting at %d", l.Index, i, first)
		}
		size += entrySize(l)
	}
	if size >= maxPayload {
		return fmt.Errorf("raftlog: store logs: batch of %d bytes too large", size)
	}
	s.mu.RLock()
	last := s.idx.last()
	s.mu.RUnlock()
	if last != 0 && first <= last {
		return fmt.Errorf("raftlog: store logs: index %d is not above the last index %d (DeleteRange the conflicting tail first)", first, last)
	}
	typ := byte(frameEntries)
	if s.next != 0 && first != s.next {
		typ = frameSeekEntries
	}
	b := appendFrameHeader(s.buf[:0], frameHeader{typ: typ, len: uint32(size), index: first, count: uint32(len(logs)), prev: s.chain})
	starts := make([]int, len(logs))
	for i, l := range logs {
		starts[i] = len(b) - frameHeaderSize
		b = appendEntry(b, l)
	}
	s.buf = b
	off, err := s.append(b)
	if err != nil {
		return fmt.Errorf("raftlog: store logs %d-%d: %w", first, first+uint64(len(logs))-1, err)
	}
	locs := make([]loc, len(logs))
	base := off + frameHeaderSize
	for i, st := range starts {
		end := size
		if i+1 < len(starts) {
			end = starts[i+1]
		}
		locs[i] = loc{seg: s.active, off: base + int64(st), n: uint32(end - st)}
	}
	s.mu.Lock()
	if typ == frameSeekEntries {
		s.idx.truncateFrom(first)
	}
	s.idx.append(first, locs)
	s.mu.Unlock()
	s.next = first + uint64(len(logs))
	s.active.max = max(s.active.max, s.next-1)
	return nil
}

// DeleteRange deletes entries min..max inclusive. Two ranges are
// supported, the two Raft uses: a tail (max >= LastIndex: conflicting
// entries after an election, written as a seek frame) and a head
// (min <= FirstIndex: compaction after a snapshot, written as a head frame;
// segments left with no live entry are then removed). A range that touches
// no entry is a no-op; one strictly inside the log is refused.
func (s *Store) DeleteRange(min, max uint64) error {
	if min > max {
		return nil
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if err := s.writable(); err != nil {
		return err
	}
	s.mu.RLock()
	first, last := s.idx.first(), s.idx.last()
	s.mu.RUnlock()
	if s.idx.empty() || max < first || min > last {
		return nil
	}
	var fh frameHeader
	switch {
	case max >= last:
		fh = frameHeader{typ: frameSeek, index: min, prev: s.chain}
	case min <= first:
		fh = frameHeader{typ: frameHead, index: max + 1, prev: s.chain}
	default:
		return fmt.Errorf("raftlog: delete range %d-%d: only a head or a tail of %d-%d can be deleted", min, max, first, last)
	}
	if _, err := s.append(appendFrameHeader(s.buf[:0], fh)); err != nil {
		return fmt.Errorf("raftlog: delete range %d-%d: %w", min, max, err)
	}
	s.mu.Lock()
	if fh.typ == frameSeek {
		s.idx.truncateFrom(min)
		s.next = min
	} else {
		s.idx.dropBefore(fh.index)
	}
	s.mu.Unlock()
	if fh.typ == frameHead {
		return s.removeDead()
	}
	return nil
}

// removeDead removes the oldest segments that hold no live entry (never the
// active one), each removal made durable before the next so a crash leaves
// a contiguous run of segments.
func (s *Store) removeDead() error {
	for {
		s.mu.Lock()
		if len(s.segs) < 2 || s.segs[0] == s.active || s.segs[0].max >= s.idx.first() && !s.idx.empty() {
			s.mu.Unlock()
			return nil
		}
		seg := s.segs[0]
		s.segs = s.segs[1:]
		s.mu.Unlock()
		seg.f.Close()
		if err := s.fs.Remove(seg.name); err != nil {
			return fmt.Errorf("raftlog: remove compacted segment %s: %w", seg.name, err)
		}
		if err := s.sync(s.fs.SyncDir, s.dir); err != nil {
			return fmt.Errorf("raftlog: remove compacted segment %s: %w", seg.name, err)
		}
	}
}

func (s *Store) writable() error {
	s.mu.RLock()
	closed := s.closed
	s.mu.RUnlock()
	if closed {
		return ErrClosed
	}
	if s.failed != nil {
		return s.failed
	}
	return nil
}

// append writes one frame at the tail of the active segment (starting a
// new segment first if it is full) and syncs it. It returns the frame's
// offset. A failed write is cut off again, so the store stays usable (a
// full disk); a failed sync makes the store failed.
func (s *Store) append(b []byte) (int64, error) {
	if s.active == nil || s.tail > segHeaderSize && s.tail+int64(len(b)) > s.opts.SegmentSize {
		if err := s.rotate(); err != nil {
			return 0, err
		}
	}
	off := s.tail
	if _, err := s.active.f.WriteAt(b, off); err != nil {
		if terr := s.active.f.Truncate(off); terr != nil {
			s.failed = fmt.Errorf("%w: write failed (%v), then cutting it off failed: %v", ErrFailed, err, terr)
		}
		return 0, fmt.Errorf("write %s: %w", s.active.name, err)
	}
	if err := s.sync(func(string) error { return s.active.f.Sync() }, s.active.name); err != nil {
		s.failed = fmt.Errorf("%w: sync %s: %v", ErrFailed, s.active.name, err)
		return 0, s.failed
	}
	s.tail = off + int64(len(b))
	s.chain = be.Uint32(b[frameHeaderSize-4:])
	return off, nil
}

// rotate starts a new segment: written under a temporary name, synced,
// renamed into place and the directory synced, so a segment file that
// exists under its final name always has a whole header.
func (s *Store) rotate() error {
	var seq uint64 = 1
	if s.active != nil {
		seq = s.active.seq + 1
	}
	name := filepath.Join(s.dir, segName(seq))
	tmp := name + ".tmp"
	f, err := s.fs.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC)
	if err != nil {
		return fmt.Errorf("create segment: %w", err)
	}
	fail := func(err error) error {
		f.Close()
		s.fs.Remove(tmp)
		return fmt.Errorf("create segment %s: %w", name, err)
	}
	if _, err := f.WriteAt(appendSegHeader(nil, segHeader{seq: seq, next: s.next, chain: s.chain}), 0); err != nil {
		return fail(err)
	}
	if err := s.sync(func(string) error { return f.Sync() }, tmp); err != nil {
		return fail(err)
	}
	if err := s.fs.Rename(tmp, name); err != nil {
		return fail(err)
	}
	if err := s.sync(s.fs.SyncDir, s.dir); err != nil {
		// The rename may or may not survive a crash; the file is
		// whole either way, but the store cannot know: stop.
		s.failed = fmt.Errorf("%w: sync %s: %v", ErrFailed, s.dir, err)
		f.Close()
		return s.failed
	}
	// Reopen under the final name, so errors from this file name the
	// segment, not the temporary file that no longer exists.
	f.Close()
	if f, err = s.fs.OpenFile(name, os.O_RDWR); err != nil {
		s.failed = fmt.Errorf("%w: reopen %s: %v", ErrFailed, name, err)
		return s.failed
	}
	seg := &segment{seq: seq, name: name, f: f}
	s.mu.Lock()
	s.segs = append(s.segs, seg)
	s.mu.Unlock()
	s.active, s.tail = seg, segHeaderSize
	return nil
}

// Close closes the files. Every method fails with ErrClosed afterwards.
func (s *Store) Close() error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	var errs []error
	for _, seg := range s.segs {
		errs = append(errs, seg.f.Close())
	}
	return errors.Join(errs...)
}
