package handover

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/verbund/verbund/federation/envelope"
	"github.com/verbund/verbund/keys"
	federationv1 "github.com/verbund/verbund/proto/gen/verbund/federation/v1"
)

// TrackCase bounds: organisations asked, items taken per answer and in
// total.
const (
	maxTrackOrgs     = 32
	maxItemsPerOrg   = 1000
	maxTimelineItems = 4000
	maxDepthHops     = 256
)

// GetCaseTimeline returns what this organisation holds about the case with
// the tracking code: receipts of handovers it sent (signed by their
// recipients) or received (signed by itself), the signed events it received
// about handovers it sent, and unsigned notes of handovers not yet delivered
// and of events it issued (whose signed form its peer holds). Case data is
// never included.
func (s *Service) GetCaseTimeline(ctx context.Context, req *federationv1.GetCaseTimelineRequest) (*federationv1.GetCaseTimelineResponse, error) {
	done, err := s.enter()
	if err != nil {
		return nil, err
	}
	defer done()
	code := req.GetTrackingCode()
	if err := checkCode(code); err != nil {
		return nil, err
	}
	items, err := s.localTimeline(ctx, code)
	if err != nil {
		return nil, err
	}
	return &federationv1.GetCaseTimelineResponse{OrganisationId: s.cfg.OrgID, Items: items}, nil
}

func (s *Service) localTimeline(ctx context.Context, code string) ([]*federationv1.TimelineItem, error) {
	var items []*federationv1.TimelineItem
	err := s.view(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = trackPrefix(code)
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.ValidForPrefix(opts.Prefix); it.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			jti := string(it.Item().Key()[len(opts.Prefix):])
			role, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			switch string(role) {
			case "out":
				if err := s.sentItems(txn, jti, &items); err != nil {
					return err
				}
			case "in":
				if err := s.receivedItems(txn, jti, &items); err != nil {
					return err
				}
			}
		}
		return nil
	})
	return items, err
}

// sentItems: a handover this organisation sent, and the events about it.
func (s *Service) sentItems(txn *badger.Txn, jti string, items *[]*federationv1.TimelineItem) error {
	var out outboxRecord
	ok, err := getJSON(txn, key(pOutbox, jti), &out)
	if err != nil || !ok {
		return err
	}
	item := &federationv1.TimelineItem{
		HandoverId: jti, FromOrganisationId: s.cfg.OrgID, ToOrganisationId: out.To, EnvelopeSha256: out.Digest,
		Type: federationv1.EventType_EVENT_TYPE_HANDED_OVER, AtUnixMs: out.CreatedAt,
	}
	if out.State == stateDelivered {
		item.Kind = federationv1.TimelineItemKind_TIMELINE_ITEM_KIND_RECEIPT
		item.SignedToken = out.Receipt
		item.AtUnixMs = out.DeliveredAt
		item.Recorded = momentProto(out.ReceiptIndex, out.DeliveredAt)
	} else {
		item.Kind = federationv1.TimelineItemKind_TIMELINE_ITEM_KIND_PENDING_HANDOVER
	}
	*items = append(*items, item)
	opts := badger.DefaultIteratorOptions
	opts.Prefix = key(pHandoverEv, jti, "")
	opts.PrefetchValues = false
	it := txn.NewIterator(opts)
	defer it.Close()
	for it.Rewind(); it.ValidForPrefix(opts.Prefix); it.Next() {
		evID := string(it.Item().Key()[len(opts.Prefix):])
		var ev eventRecord
		ok, err := getJSON(txn, key(pEvent, evID), &ev)
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		*items = append(*items, &federationv1.TimelineItem{
			Kind: federationv1.TimelineItemKind_TIMELINE_ITEM_KIND_EVENT, SignedToken: ev.SignedJWS,
			HandoverId: jti, EventId: ev.ID, FromOrganisationId: s.cfg.OrgID, ToOrganisationId: ev.From,
			Type: eventTypeProto(ev.Type), AtUnixMs: ev.IssuedAt, ForwardedTo: ev.ForwardedTo,
			Recorded: momentProto(ev.RecordedIndex, ev.ReceivedAt),
		})
	}
	return nil
}

// receivedItems: a handover this organisation received (its own receipt),
// and the events it issued about it.
func (s *Service) receivedItems(txn *badger.Txn, jti string, items *[]*federationv1.TimelineItem) error {
	var rec inboxRecord
	ok, err := getJSON(txn, key(pInbox, jti), &rec)
	if err != nil || !ok {
		return err
	}
	*items = append(*items, &federationv1.TimelineItem{
		Kind: federationv1.TimelineItemKind_TIMELINE_ITEM_KIND_RECEIPT, SignedToken: rec.Receipt,
		HandoverId: jti, FromOrganisationId: rec.From, ToOrganisationId: s.cfg.OrgID, EnvelopeSha256: rec.Digest,
		Type: federationv1.EventType_EVENT_TYPE_HANDED_OVER, AtUnixMs: rec.ReceivedAt,
		Recorded: momentProto(rec.RecordedIndex, rec.ReceivedAt),
	})
	for _, e := range rec.Events {
		*items = append(*items, &federationv1.TimelineItem{
			Kind: federationv1.TimelineItemKind_TIMELINE_ITEM_KIND_ISSUED_EVENT, HandoverId: jti, EventId: e.ID,
			FromOrganisationId: rec.From, ToOrganisationId: s.cfg.OrgID, Type: eventTypeProto(e.Type),
			AtUnixMs: e.At, ForwardedTo: e.ForwardedTo,
		})
	}
	return nil
}

// TrackCase collects the timeline of a case from every organisation on its
// path (starting from what this node holds, following the organisations
// each answer names) and verifies every signed token against the registry
// keys: receipts with envelope.VerifyReceipt, events with
// envelope.VerifyEvent, each at the registry moment the answering node
// recorded with it (TimelineItem.recorded; the current moment if none), so
// what was signed before a suspension or a key revocation still verifies.
// The recorded moment is asserted by the answering node, like the link
// between tracking code and handovers.
// An entry is marked verified only if its token verified; the entry then
// shows the token's content, not what the answering node said.
//
// The link between the tracking code and the handovers is asserted by the
// nodes on the path (it is inside the encrypted handovers, which are not
// disclosed); each verified entry is authentic, signed by its organisation.
func (s *Service) TrackCase(ctx context.Context, req *federationv1.TrackCaseRequest) (*federationv1.TrackCaseResponse, error) {
	done, err := s.enter()
	if err != nil {
		return nil, err
	}
	defer done()
	code := req.GetTrackingCode()
	if err := checkCode(code); err != nil {
		return nil, err
	}
	local, err := s.localTimeline(ctx, code)
	if err != nil {
		return nil, err
	}
	if len(local) == 0 {
		return nil, fmt.Errorf("%w: no case with tracking code %q here", ErrNotFound, code)
	}
	res := &federationv1.TrackCaseResponse{TrackingCode: code, LeikaKey: s.receivedLeika(code)}
	seen := map[string]bool{s.cfg.OrgID: true}
	res.OrganisationIds = append(res.OrganisationIds, s.cfg.OrgID)
	var all []*federationv1.TimelineItem
	var queue []string
	note := func(items []*federationv1.TimelineItem) {
		if room := maxTimelineItems - len(all); len(items) > room {
			items = items[:max(room, 0)]
		}
		for _, it := range items {
			for _, org := range []string{it.GetFromOrganisationId(), it.GetToOrganisationId(), it.GetForwardedTo()} {
				if org != "" && !seen[org] && len(seen) < maxTrackOrgs {
					seen[org] = true
					res.OrganisationIds = append(res.OrganisationIds, org)
					queue = append(queue, org)
				}
			}
		}
		all = append(all, items...)
	}
	note(local)
	for len(queue) > 0 {
		batch := queue
		queue = nil
		type answer struct {
			org   string
			items []*federationv1.TimelineItem
			err   error
		}
		answers := make([]answer, len(batch))
		var wg sync.WaitGroup
		for i, org := range batch {
			wg.Add(1)
			go func() {
				defer wg.Done()
				items, err := s.remoteTimeline(ctx, org, code)
				answers[i] = answer{org, items, err}
			}()
		}
		wg.Wait()
		for _, a := range answers {
			if a.err != nil {
				s.log.Info("timeline not available", "org", a.org, "err", a.err)
				res.UnreachableOrganisationIds = append(res.UnreachableOrganisationIds, a.org)
				continue
			}
			note(a.items)
		}
	}
	res.Entries = s.verifyTimeline(ctx, all)
	return res, nil
}

func (s *Service) remoteTimeline(ctx context.Context, org, code string) ([]*federationv1.TimelineItem, error) {
	endpoint, err := s.cfg.Directory.Endpoint(ctx, org)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	res, err := s.cfg.Dialer.Peer(endpoint).GetCaseTimeline(ctx, &federationv1.GetCaseTimelineRequest{TrackingCode: code})
	if err != nil {
		return nil, err
	}
	if res.GetOrganisationId() != org {
		return nil, fmt.Errorf("endpoint of %s answered as %q", org, res.GetOrganisationId())
	}
	items := res.GetItems()
	if len(items) > maxItemsPerOrg {
		items = items[:maxItemsPerOrg]
	}
	return items, nil
}

// verifyTimeline verifies items and merges them into entries: one per
// handover (its receipt) and one per event, a verified token winning over
// unsigned notes.
func (s *Service) verifyTimeline(ctx context.Context, items []*federationv1.TimelineItem) []*federationv1.TimelineEntry {
	byKey := map[string]*federationv1.TimelineEntry{}
	put := func(k string, e *federationv1.TimelineEntry) {
		if old, ok := byKey[k]; ok && (old.Verified || !e.Verified && old.SignedToken != "") {
			return
		}
		byKey[k] = e
	}
	now := s.now()
	for _, it := range items {
		at := MomentFromProto(it.GetRecorded(), now)
		switch it.GetKind() {
		case federationv1.TimelineItemKind_TIMELINE_ITEM_KIND_RECEIPT:
			e := &federationv1.TimelineEntry{
				OrganisationId: it.GetToOrganisationId(), Type: federationv1.EventType_EVENT_TYPE_HANDED_OVER,
				AtUnixMs: it.GetAtUnixMs(), SignedToken: it.GetSignedToken(), HandoverId: it.GetHandoverId(),
				FromOrganisationId: it.GetFromOrganisationId(), ToOrganisationId: it.GetToOrganisationId(),
				Recorded: it.GetRecorded(),
			}
			r, err := verifyReceiptItem(ctx, s.cfg.Resolver, it, at)
			if err != nil {
				e.VerificationError = err.Error()
			} else {
				e.Verified = true
				e.OrganisationId, e.ToOrganisationId, e.FromOrganisationId = r.Issuer, r.Issuer, r.Audience
				e.HandoverId, e.AtUnixMs = r.HandoverID, ms(r.ReceivedAt)
			}
			put("h/"+e.HandoverId, e)
		case federationv1.TimelineItemKind_TIMELINE_ITEM_KIND_PENDING_HANDOVER:
			put("h/"+it.GetHandoverId(), &federationv1.TimelineEntry{
				OrganisationId: it.GetFromOrganisationId(), Type: federationv1.EventType_EVENT_TYPE_HANDED_OVER,
				AtUnixMs: it.GetAtUnixMs(), HandoverId: it.GetHandoverId(), FromOrganisationId: it.GetFromOrganisationId(),
				ToOrganisationId: it.GetToOrganisationId(), VerificationError: "not delivered yet",
			})
		case federationv1.TimelineItemKind_TIMELINE_ITEM_KIND_EVENT:
			e := &federationv1.TimelineEntry{
				OrganisationId: it.GetToOrganisationId(), Type: it.GetType(), AtUnixMs: it.GetAtUnixMs(),
				SignedToken: it.GetSignedToken(), HandoverId: it.GetHandoverId(), EventId: it.GetEventId(),
				FromOrganisationId: it.GetFromOrganisationId(), ToOrganisationId: it.GetToOrganisationId(),
				ForwardedTo: it.GetForwardedTo(), Recorded: it.GetRecorded(),
			}
			ev, err := envelope.VerifyEvent(ctx, it.GetSignedToken(), s.cfg.Resolver, at)
			if err != nil {
				e.VerificationError = err.Error()
			} else {
				e.Verified = true
				e.OrganisationId, e.ToOrganisationId, e.FromOrganisationId = ev.Issuer, ev.Issuer, ev.Audience
				e.Type, e.AtUnixMs = eventTypeProto(string(ev.Type)), ms(ev.IssuedAt)
				e.HandoverId, e.EventId, e.ForwardedTo = ev.HandoverID, ev.ID, ev.ForwardedTo
				e.Problem = problemProto(ev.Problem)
			}
			put("e/"+e.EventId, e)
		case federationv1.TimelineItemKind_TIMELINE_ITEM_KIND_ISSUED_EVENT:
			put("e/"+it.GetEventId(), &federationv1.TimelineEntry{
				OrganisationId: it.GetToOrganisationId(), Type: it.GetType(), AtUnixMs: it.GetAtUnixMs(),
				HandoverId: it.GetHandoverId(), EventId: it.GetEventId(), FromOrganisationId: it.GetFromOrganisationId(),
				ToOrganisationId: it.GetToOrganisationId(), ForwardedTo: it.GetForwardedTo(),
				VerificationError: "signed event not (yet) held by its recipient",
			})
		}
	}
	out := make([]*federationv1.TimelineEntry, 0, len(byKey))
	for _, e := range byKey {
		out = append(out, e)
	}
	depth := handoverDepths(out)
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		// Signed times have a resolution of seconds. Every step on a hop
		// precedes the next hop (a forward ends the case at its holder), so
		// order by hop first, then time, then the natural order of steps.
		if da, db := depth[a.HandoverId], depth[b.HandoverId]; da != db {
			return da < db
		}
		if as, bs := a.AtUnixMs/1000, b.AtUnixMs/1000; as != bs {
			return as < bs
		}
		if a.Type != b.Type {
			return a.Type < b.Type
		}
		return a.HandoverId+a.EventId < b.HandoverId+b.EventId
	})
	return out
}

// handoverDepths numbers the hops of a case: a handover from an
// organisation that received the case earlier is one deeper than the
// handover that brought it there.
func handoverDepths(entries []*federationv1.TimelineEntry) map[string]int {
	var hops []*federationv1.TimelineEntry
	for _, e := range entries {
		if e.Type == federationv1.EventType_EVENT_TYPE_HANDED_OVER {
			hops = append(hops, e)
		}
	}
	depth := map[string]int{}
	if len(hops) > maxDepthHops {
		return depth
	}
	// Relax until stable: depth(h) = 1 + depth(g) for a hop g into h's
	// sender no later than h (times in seconds; capped for cycles).
	for range len(hops) {
		changed := false
		for _, h := range hops {
			for _, g := range hops {
				if g == h || g.ToOrganisationId != h.FromOrganisationId || g.AtUnixMs/1000 > h.AtUnixMs/1000 {
					continue
				}
				if d := depth[g.HandoverId] + 1; d > depth[h.HandoverId] && d <= len(hops) {
					depth[h.HandoverId] = d
					changed = true
				}
			}
		}
		if !changed {
			break
		}
	}
	return depth
}

func verifyReceiptItem(ctx context.Context, r envelope.KeyResolver, it *federationv1.TimelineItem, at keys.Moment) (*envelope.Receipt, error) {
	raw, err := hex.DecodeString(it.GetEnvelopeSha256())
	if err != nil || len(raw) != 32 {
		return nil, errors.New("no valid envelope digest")
	}
	var d [32]byte
	copy(d[:], raw)
	rc, err := envelope.VerifyReceipt(ctx, it.GetSignedToken(), r, it.GetToOrganisationId(), d, at)
	if err != nil {
		return nil, err
	}
	if rc.HandoverID != it.GetHandoverId() {
		return nil, fmt.Errorf("receipt is for handover %q, not %q", rc.HandoverID, it.GetHandoverId())
	}
	return rc, nil
}

// receivedLeika returns the LeiKa key of the newest case with tracking
// code this organisation received ("" if it received none).
func (s *Service) receivedLeika(code string) string {
	var leika string
	var at int64
	_ = s.view(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = trackPrefix(code)
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.ValidForPrefix(opts.Prefix); it.Next() {
			role, err := it.Item().ValueCopy(nil)
			if err != nil || string(role) != "in" {
				continue
			}
			var rec inboxRecord
			if ok, err := getJSON(txn, key(pInbox, string(it.Item().Key()[len(opts.Prefix):])), &rec); err == nil && ok && rec.ReceivedAt >= at {
				leika, at = rec.Leika, rec.ReceivedAt
			}
		}
		return nil
	})
	return leika
}
