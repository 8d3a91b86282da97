package raftlog

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"time"

	"github.com/hashicorp/raft"
)

// On-disk format (all integers big-endian, checksums CRC-32C):
//
//	segment  = segHeader frame*
//	segHeader (40 bytes):
//	  0  magic "VBRAFTL1"
//	  8  seq      u64   segment number, also in the file name
//	  16 next     u64   index the log expected next when the segment was
//	                    created (0: any); checked against the previous segment
//	  24 chain    u32   checksum of the last frame header before the segment
//	  28 reserved 4 zero bytes
//	  32 crc      u32   over bytes 0..31
//	  36 reserved 4 zero bytes
//	frame header (32 bytes):
//	  0  type     u8    frameEntries, frameSeekEntries, frameSeek, frameHead
//	  1  reserved 3 zero bytes
//	  4  length   u32   payload bytes after the header
//	  8  index    u64   first entry index (entries), or the seek/head index
//	  16 count    u32   entries in the payload
//	  20 prev     u32   checksum of the previous frame header (the chain)
//	  24 reserved 4 zero bytes
//	  28 crc      u32   over bytes 0..27
//	entry (in an entries payload):
//	  0  n        u32   bytes after this 8-byte prefix
//	  4  crc      u32   over those n bytes
//	  8  index u64, term u64, type u8, appendedAt i64 (unix ns, 0 = zero time),
//	     dataLen u32, data, extLen u32, extensions
//
// One StoreLogs or DeleteRange call is exactly one frame, written with one
// WriteAt and made durable with one Sync. The header checksum makes the
// frame length trustworthy, so a reader always knows where a frame ends; the
// per-entry checksum (covering the entry's index) lets GetLog verify a
// single entry without reading its whole batch. The frame headers form a
// chain (each holds the previous one's checksum, a segment header the last
// one before it), so a frame lost whole, with every checksum intact, is
// still noticed.
//
// Frame semantics, applied in file order:
//
//	frameEntries      append entries index..index+count-1; index must be the
//	                  expected next index
//	frameSeekEntries  drop entries >= index, then append as above (used when
//	                  a batch does not follow the last index: after a snapshot
//	                  install or after the whole log was deleted)
//	frameSeek         drop entries >= index; the next entries start at index
//	                  (tail truncation)
//	frameHead         drop entries < index (head compaction)
const (
	segMagic        = "VBRAFTL1"
	segHeaderSize   = 40
	frameHeaderSize = 32
	entryPrefix     = 8
	entryFixed      = 8 + 8 + 1 + 8 + 4 + 4 // index, term, type, appendedAt, dataLen, extLen

	frameEntries     = 1
	frameSeekEntries = 2
	frameSeek        = 3
	frameHead        = 4

	maxPayload = 1 << 31
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func checksum(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

var be = binary.BigEndian

func appendSegHeader(b []byte, h segHeader) []byte {
	start := len(b)
	b = append(b, segMagic...)
	b = be.AppendUint64(b, h.seq)
	b = be.AppendUint64(b, h.next)
	b = be.AppendUint32(b, h.chain)
	b = append(b, 0, 0, 0, 0)
	b = be.AppendUint32(b, checksum(b[start:]))
	return append(b, 0, 0, 0, 0)
}

type segHeader struct {
	seq, next uint64
	chain     uint32
}

func parseSegHeader(b []byte) (segHeader, error) {
	if len(b) < segHeaderSize {
		return segHeader{}, errors.New("short segment header")
	}
	if string(b[:8]) != segMagic {
		return segHeader{}, errors.New("bad segment magic")
	}
	if be.Uint32(b[32:]) != checksum(b[:32]) {
		return segHeader{}, errors.New("segment header checksum mismatch")
	}
	if !zero(b[28:32]) || !zero(b[36:40]) {
		return segHeader{}, errors.New("segment header reserved bytes not zero")
	}
	return segHeader{seq: be.Uint64(b[8:]), next: be.Uint64(b[16:]), chain: be.Uint32(b[24:])}, nil
}

type frameHeader struct {
	typ   byte
	len   uint32
	index uint64
	count uint32
	prev  uint32
	crc   uint32 // set by parseFrameHeader and appendFrameHeader's caller
}

func appendFrameHeader(b []byte, h frameHeader) []byte {
	start := len(b)
	b = append(b, h.typ, 0, 0, 0)
	b = be.AppendUint32(b, h.len)
	b = be.AppendUint64(b, h.index)
	b = be.AppendUint32(b, h.count)
	b = be.AppendUint32(b, h.prev)
	b = append(b, 0, 0, 0, 0)
	return be.AppendUint32(b, checksum(b[start:]))
}

// parseFrameHeader reports ok only for a header whose checksum, type and
// reserved bytes are all valid.
func parseFrameHeader(b []byte) (frameHeader, bool) {
	if len(b) < frameHeaderSize || b[0] < frameEntries || b[0] > frameHead || !zero(b[1:4]) || !zero(b[24:28]) {
		return frameHeader{}, false
	}
	if be.Uint32(b[28:]) != checksum(b[:28]) {
		return frameHeader{}, false
	}
	h := frameHeader{typ: b[0], len: be.Uint32(b[4:]), index: be.Uint64(b[8:]), count: be.Uint32(b[16:]),
		prev: be.Uint32(b[20:]), crc: be.Uint32(b[28:])}
	switch h.typ {
	case frameSeek, frameHead:
		if h.len != 0 || h.count != 0 {
			return frameHeader{}, false
		}
	default:
		if h.count == 0 {
			return frameHeader{}, false
		}
	}
	return h, true
}

func entrySize(l *raft.Log) int { return entryPrefix + entryFixed + len(l.Data) + len(l.Extensions) }

func appendEntry(b []byte, l *raft.Log) []byte {
	start := len(b)
	b = be.AppendUint32(b, uint32(entryFixed+len(l.Data)+len(l.Extensions)))
	b = append(b, 0, 0, 0, 0) // checksum, filled below
	b = be.AppendUint64(b, l.Index)
	b = be.AppendUint64(b, l.Term)
	b = append(b, byte(l.Type))
	var at int64
	if !l.AppendedAt.IsZero() {
		at = l.AppendedAt.UnixNano()
	}
	b = be.AppendUint64(b, uint64(at))
	b = be.AppendUint32(b, uint32(len(l.Data)))
	b = append(b, l.Data...)
	b = be.AppendUint32(b, uint32(len(l.Extensions)))
	b = append(b, l.Extensions...)
	be.PutUint32(b[start+4:], checksum(b[start+entryPrefix:]))
	return b
}

// entryLen returns the length of the entry at the start of b (prefix
// included), or an error if b does not hold a whole, valid entry.
func entryLen(b []byte) (int, error) {
	if len(b) < entryPrefix {
		return 0, errors.New("short entry")
	}
	n := int(be.Uint32(b))
	if n < entryFixed || n > len(b)-entryPrefix {
		return 0, errors.New("entry length out of range")
	}
	if be.Uint32(b[4:]) != checksum(b[entryPrefix:entryPrefix+n]) {
		return 0, errors.New("entry checksum mismatch")
	}
	body := b[entryPrefix : entryPrefix+n]
	dl := int(be.Uint32(body[25:]))
	if dl > n-entryFixed || int(be.Uint32(body[29+dl:])) != n-entryFixed-dl {
		return 0, errors.New("entry field lengths inconsistent")
	}
	return entryPrefix + n, nil
}

// decodeEntry decodes a valid entry (checked by entryLen) into l. The
// returned Data and Extensions alias b.
func decodeEntry(b []byte, l *raft.Log) {
	body := b[entryPrefix:]
	l.Index = be.Uint64(body)
	l.Term = be.Uint64(body[8:])
	l.Type = raft.LogType(body[16])
	if at := int64(be.Uint64(body[17:])); at != 0 {
		l.AppendedAt = time.Unix(0, at)
	} else {
		l.AppendedAt = time.Time{}
	}
	dl := int(be.Uint32(body[25:]))
	l.Data = body[29 : 29+dl : 29+dl]
	el := int(be.Uint32(body[29+dl:]))
	l.Extensions = body[33+dl : 33+dl+el : 33+dl+el]
	if dl == 0 {
		l.Data = nil
	}
	if el == 0 {
		l.Extensions = nil
	}
}

func entryIndex(b []byte) uint64 { return be.Uint64(b[entryPrefix:]) }

func zero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
