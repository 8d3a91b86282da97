package handover

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/verbund/verbund/federation/envelope"
	federationv1 "github.com/verbund/verbund/proto/gen/verbund/federation/v1"
)

// Handover statistics (issue 10): hourly counters of this organisation's
// own handovers per service, counterpart and direction, for the agency
// console's charts. No case data: counts and processing times only.
//
// A counter is updated by the same committer op as the state change it
// counts (taking a handover in, sending one, a lifecycle step, an event
// about a sent handover), so it is in the same badger transaction: a crash
// loses neither or both, and a duplicate delivery, which the op answers
// from the dedupe record without a change, counts nothing.
//
//	ho/st/<bucket start ms, 8 bytes BE>/<leika>/<counterpart>/<"in"|"out"> -> statsCounters (JSON)
//
// Buckets are by this node's clock: a handover counts in the hour it was
// sent or taken in, a decision in the hour it was taken (incoming) or its
// event arrived (outgoing). Processing time is the time from receipt to
// the rejection or completion: for incoming cases from taking the case in
// to the step, for outgoing cases from the stored delivery receipt to the
// arrival of the event (both by this node's clock; a negative difference
// counts as 0).

const pStats = "ho/st/"

// StatsBucketLength is the length of a statistics bucket.
const StatsBucketLength = time.Hour

// DefaultStatsWindow is what GetHandoverStats returns without a since.
const DefaultStatsWindow = 30 * 24 * time.Hour

type statsCounters struct {
	Handovers uint32 `json:"h,omitempty"`
	Accepted  uint32 `json:"a,omitempty"`
	Rejected  uint32 `json:"r,omitempty"`
	Completed uint32 `json:"c,omitempty"`
	Forwarded uint32 `json:"f,omitempty"`
	ProcSum   uint64 `json:"ps,omitempty"`
	ProcCount uint32 `json:"pc,omitempty"`
	ProcMax   uint64 `json:"pm,omitempty"`
}

func bucketStart(atMs int64) int64 {
	l := StatsBucketLength.Milliseconds()
	if atMs < 0 {
		atMs = 0
	}
	return atMs - atMs%l
}

func statsKey(bucket int64, leika, counterpart string, incoming bool) []byte {
	b := seqKey(pStats, uint64(bucket))
	dir := "out"
	if incoming {
		dir = "in"
	}
	return append(b, "/"+leika+"/"+counterpart+"/"+dir...)
}

// count updates the counters of one bucket in the op's transaction.
func (t *tx) count(atMs int64, leika, counterpart string, incoming bool, fn func(*statsCounters)) error {
	k := statsKey(bucketStart(atMs), leika, counterpart, incoming)
	var c statsCounters
	if _, err := t.getJSON(k, &c); err != nil {
		return err
	}
	fn(&c)
	return t.setJSON(k, c)
}

// countDecision counts a lifecycle step (typ) taken at atMs; receivedMs > 0
// is when the case was received, for the processing time of rejections and
// completions.
func (t *tx) countDecision(atMs int64, leika, counterpart string, incoming bool, typ envelope.EventType, receivedMs int64) error {
	return t.count(atMs, leika, counterpart, incoming, func(c *statsCounters) {
		switch typ {
		case envelope.EventAccept:
			c.Accepted++
		case envelope.EventReject:
			c.Rejected++
		case envelope.EventComplete:
			c.Completed++
		case envelope.EventForward:
			c.Forwarded++
		}
		if (typ == envelope.EventReject || typ == envelope.EventComplete) && receivedMs > 0 {
			d := uint64(max(atMs-receivedMs, 0))
			c.ProcSum += d
			c.ProcCount++
			c.ProcMax = max(c.ProcMax, d)
		}
	})
}

// GetHandoverStats returns the statistics buckets starting at or after
// since (zero: the last DefaultStatsWindow), oldest first.
func (s *Service) GetHandoverStats(ctx context.Context, since time.Time) (*federationv1.GetHandoverStatsResponse, error) {
	done, err := s.enter()
	if err != nil {
		return nil, err
	}
	defer done()
	now := s.now()
	if since.IsZero() {
		since = now.Add(-DefaultStatsWindow)
	}
	out := &federationv1.GetHandoverStatsResponse{OrganisationId: s.cfg.OrgID, GeneratedAtUnixMs: ms(now)}
	err = s.view(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(pStats), PrefetchValues: true})
		defer it.Close()
		n := 0
		for it.Seek(seqKey(pStats, uint64(bucketStart(since.UnixMilli())))); it.Valid(); it.Next() {
			if n++; n%256 == 0 && ctx.Err() != nil {
				return ctx.Err()
			}
			k := it.Item().Key()
			rest := k[len(pStats):]
			if len(rest) < 9 {
				continue
			}
			start := int64(binary.BigEndian.Uint64(rest[:8]))
			if start < since.UnixMilli() {
				continue // the bucket holding since started before it
			}
			parts := strings.Split(string(rest[9:]), "/")
			if len(parts) != 3 || rest[8] != '/' {
				return fmt.Errorf("handover: malformed statistics key %q", k)
			}
			var c statsCounters
			if err := it.Item().Value(func(v []byte) error { return json.Unmarshal(bytes.Clone(v), &c) }); err != nil {
				return fmt.Errorf("handover: decode %q: %w", k, err)
			}
			out.Buckets = append(out.Buckets, &federationv1.HandoverStatsBucket{
				StartUnixMs: start, LengthMs: StatsBucketLength.Milliseconds(), OrganisationId: s.cfg.OrgID,
				LeikaKey: parts[0], CounterpartId: parts[1], Incoming: parts[2] == "in",
				Handovers: c.Handovers, Accepted: c.Accepted, Rejected: c.Rejected, Completed: c.Completed, Forwarded: c.Forwarded,
				ProcessingMsSum: c.ProcSum, ProcessingCount: c.ProcCount, ProcessingMsMax: c.ProcMax,
			})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
