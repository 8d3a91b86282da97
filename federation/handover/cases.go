package handover

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/verbund/verbund/federation/envelope"
	federationv1 "github.com/verbund/verbund/proto/gen/verbund/federation/v1"
)

// ListInbox lists received cases in arrival order.
func (s *Service) ListInbox(ctx context.Context, req *federationv1.ListInboxRequest) (*federationv1.ListInboxResponse, error) {
	out := &federationv1.ListInboxResponse{}
	st := req.GetState()
	next, err := listInOrder(ctx, s, pInboxOrder, pInbox, req, func(rec *inboxRecord) bool {
		if st != federationv1.CaseState_CASE_STATE_UNSPECIFIED && caseStateProto(rec.State) != st {
			return false
		}
		out.Cases = append(out.Cases, rec.summary())
		return true
	})
	if err != nil {
		return nil, err
	}
	out.NextPageToken = next
	return out, nil
}

func (s *Service) loadCase(jti string, withBody bool) (*inboxRecord, *caseBody, error) {
	if jti == "" {
		return nil, nil, errInvalid("handover_id is required")
	}
	var rec inboxRecord
	var body caseBody
	err := s.view(func(txn *badger.Txn) error {
		ok, err := getJSON(txn, key(pInbox, jti), &rec)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("%w: no case %q in the inbox", ErrNotFound, jti)
		}
		if withBody {
			_, err = getJSON(txn, key(pInboxBody, jti), &body)
		}
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	return &rec, &body, nil
}

// GetCase returns a received case with its data, history and the events
// issued about it.
func (s *Service) GetCase(ctx context.Context, req *federationv1.GetCaseRequest) (*federationv1.GetCaseResponse, error) {
	done, err := s.enter()
	if err != nil {
		return nil, err
	}
	defer done()
	rec, body, err := s.loadCase(req.GetHandoverId(), true)
	if err != nil {
		return nil, err
	}
	c := &federationv1.Case{
		Summary: rec.summary(), CaseJson: string(body.Data), SignedHandover: body.SignedJWS, Receipt: rec.Receipt,
		ForwardedHandoverId: rec.ForwardedHandoverID, ForwardedTo: rec.ForwardedTo,
	}
	for _, a := range body.Attachments {
		c.Attachments = append(c.Attachments, &federationv1.Attachment{Name: a.Name, MediaType: a.MediaType, Data: a.Data, Sha256: a.SHA256})
	}
	for _, h := range rec.Previous {
		c.Previous = append(c.Previous, &federationv1.Hop{HandoverId: h.HandoverID, FromOrganisationId: h.From,
			ToOrganisationId: h.To, EnvelopeSha256: h.Digest, AtUnixMs: ms(h.At)})
	}
	err = s.view(func(txn *badger.Txn) error {
		for _, e := range rec.Events {
			ce := &federationv1.CaseEvent{EventId: e.ID, Type: eventTypeProto(e.Type), AtUnixMs: e.At,
				Problem: problemProto(e.Problem), ForwardedTo: e.ForwardedTo}
			var out outboxRecord
			if ok, err := getJSON(txn, key(pOutbox, e.ID), &out); err != nil {
				return err
			} else if ok {
				ce.DeliveryState = outboxStateProto(out.State)
			}
			c.Events = append(c.Events, ce)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &federationv1.GetCaseResponse{Case: c}, nil
}

// allowed says whether a case in state may take step typ.
func allowed(state string, typ envelope.EventType) bool {
	switch typ {
	case envelope.EventAccept:
		return state == caseReceived
	case envelope.EventReject, envelope.EventForward:
		return state == caseReceived || state == caseAccepted
	case envelope.EventComplete:
		return state == caseAccepted
	}
	return false
}

func stateAfter(typ envelope.EventType) string {
	switch typ {
	case envelope.EventAccept:
		return caseAccepted
	case envelope.EventReject:
		return caseRejected
	case envelope.EventComplete:
		return caseCompleted
	case envelope.EventForward:
		return caseForwarded
	}
	return ""
}

// AcceptCase takes a received case on and reports it to the sender.
func (s *Service) AcceptCase(ctx context.Context, req *federationv1.AcceptCaseRequest) (*federationv1.AcceptCaseResponse, error) {
	id, st, err := s.step(ctx, req.GetHandoverId(), envelope.EventAccept, nil)
	if err != nil {
		return nil, err
	}
	return &federationv1.AcceptCaseResponse{EventId: id, State: caseStateProto(st)}, nil
}

// RejectCase refuses a case with an RFC 7807 problem.
func (s *Service) RejectCase(ctx context.Context, req *federationv1.RejectCaseRequest) (*federationv1.RejectCaseResponse, error) {
	p := req.GetProblem()
	if p.GetType() == "" || p.GetTitle() == "" {
		return nil, errInvalid("problem type and title are required")
	}
	id, st, err := s.step(ctx, req.GetHandoverId(), envelope.EventReject,
		&envelope.Problem{Type: p.GetType(), Title: p.GetTitle(), Detail: p.GetDetail()})
	if err != nil {
		return nil, err
	}
	return &federationv1.RejectCaseResponse{EventId: id, State: caseStateProto(st)}, nil
}

// CompleteCase completes an accepted case.
func (s *Service) CompleteCase(ctx context.Context, req *federationv1.CompleteCaseRequest) (*federationv1.CompleteCaseResponse, error) {
	id, st, err := s.step(ctx, req.GetHandoverId(), envelope.EventComplete, nil)
	if err != nil {
		return nil, err
	}
	return &federationv1.CompleteCaseResponse{EventId: id, State: caseStateProto(st)}, nil
}

func (s *Service) newEvent(rec *inboxRecord, typ envelope.EventType, now time.Time) envelope.Event {
	return envelope.Event{
		ID: envelope.NewID(), Issuer: s.cfg.OrgID, Audience: rec.From, IssuedAt: now,
		Expiry: now.Add(s.cfg.HandoverTTL), Type: typ, HandoverID: rec.HandoverID, CaseID: rec.CaseID,
		Digest: rec.Digest,
	}
}

// putEvent writes an issued event into the case record and the outbox.
func (s *Service) putEvent(t *tx, rec *inboxRecord, ev envelope.Event, token string) error {
	d := envelope.Digest(token)
	digest := hex.EncodeToString(d[:])
	rec.State = stateAfter(ev.Type)
	rec.UpdatedAt = ms(ev.IssuedAt)
	rec.Events = append(rec.Events, issuedEvent{ID: ev.ID, Type: string(ev.Type), At: ms(ev.IssuedAt), Problem: ev.Problem, ForwardedTo: ev.ForwardedTo})
	if err := t.setJSON(key(pInbox, rec.HandoverID), rec); err != nil {
		return err
	}
	if err := t.countDecision(ms(ev.IssuedAt), rec.Leika, rec.From, true, ev.Type, rec.ReceivedAt); err != nil {
		return err
	}
	out := outboxRecord{
		ID: ev.ID, Kind: kindEvent, To: ev.Audience, Digest: digest, State: statePending, CreatedAt: ms(ev.IssuedAt),
		HandoverID: ev.HandoverID, EventType: string(ev.Type), ForwardedTo: ev.ForwardedTo,
		TrackingCode: rec.TrackingCode, CaseID: rec.CaseID,
	}
	if err := s.putOutbox(t, out, token); err != nil {
		return err
	}
	t.audit(AuditEventSent, ev.ID, digest, ev.Audience)
	return nil
}

// step takes one lifecycle step and queues the signed event to the sender.
// Repeating a step that was taken returns the event issued the first time.
func (s *Service) step(ctx context.Context, jti string, typ envelope.EventType, problem *envelope.Problem) (string, string, error) {
	done, err := s.enter()
	if err != nil {
		return "", "", err
	}
	defer done()
	rec, _, err := s.loadCase(jti, false)
	if err != nil {
		return "", "", err
	}
	if e := rec.event(typ); e != nil {
		return e.ID, rec.State, nil
	}
	if !allowed(rec.State, typ) {
		return "", "", fmt.Errorf("%w: case %s is %s; cannot %s", ErrConflict, jti, rec.State, typ)
	}
	if err := s.admitWrite(); err != nil {
		return "", "", err
	}
	ev := s.newEvent(rec, typ, s.now())
	ev.Problem = problem
	token, err := envelope.SealEventFor(ctx, ev, s.cfg.Keys.SigningKey(), s.cfg.Resolver)
	if err != nil {
		return "", "", fmt.Errorf("%w: %v", ErrInvalidArgument, err)
	}
	eventID, state := ev.ID, ""
	created := false
	actor := ActorFrom(ctx)
	err = s.com.do(func(t *tx) error {
		created = false
		t.actor = actor
		var cur inboxRecord
		ok, err := t.getJSON(key(pInbox, jti), &cur)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("%w: case %q", ErrNotFound, jti)
		}
		if e := cur.event(typ); e != nil {
			eventID, state = e.ID, cur.State
			return nil
		}
		if !allowed(cur.State, typ) {
			return fmt.Errorf("%w: case %s is %s; cannot %s", ErrConflict, jti, cur.State, typ)
		}
		if err := s.putEvent(t, &cur, ev, token); err != nil {
			return err
		}
		state, created = cur.State, true
		return nil
	})
	if err != nil {
		return "", "", err
	}
	if created {
		s.stats.sent.Add(1)
		s.del.add(ev.ID, ev.Audience, 0)
	}
	return eventID, state, nil
}

// ForwardCase hands a received case on to a third organisation: a new
// handover (same case id, tracking code, data and attachments; Previous
// extended by the hop that brought the case here) and a "forward" event to
// the sender, committed together.
func (s *Service) ForwardCase(ctx context.Context, req *federationv1.ForwardCaseRequest) (*federationv1.ForwardCaseResponse, error) {
	done, err := s.enter()
	if err != nil {
		return nil, err
	}
	defer done()
	to := req.GetRecipientOrganisationId()
	if to == "" || to == s.cfg.OrgID {
		return nil, errInvalid("recipient_organisation_id must name another organisation")
	}
	rec, body, err := s.loadCase(req.GetHandoverId(), true)
	if err != nil {
		return nil, err
	}
	if e := rec.event(envelope.EventForward); e != nil {
		return &federationv1.ForwardCaseResponse{HandoverId: rec.ForwardedHandoverID, EventId: e.ID, State: caseStateProto(rec.State)}, nil
	}
	if !allowed(rec.State, envelope.EventForward) {
		return nil, fmt.Errorf("%w: case %s is %s; cannot forward", ErrConflict, rec.HandoverID, rec.State)
	}
	if err := s.admitWrite(); err != nil {
		return nil, err
	}
	now := s.now()
	reason := req.GetReason()
	if reason == "" {
		reason = rec.Reason
	}
	prev := append(append([]envelope.Hop(nil), rec.Previous...), envelope.Hop{
		HandoverID: rec.HandoverID, From: rec.From, To: s.cfg.OrgID, Digest: rec.Digest, At: time.UnixMilli(rec.IssuedAt).UTC(),
	})
	claims := envelope.Claims{
		ID: envelope.NewID(), Issuer: s.cfg.OrgID, Audience: to, IssuedAt: now, Expiry: now.Add(s.cfg.HandoverTTL),
		CaseID: rec.CaseID, TrackingCode: rec.TrackingCode, ServiceKey: rec.Leika, Reason: reason,
		Data: body.Data, Attachments: body.Attachments, Previous: prev,
	}
	if err := claims.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidArgument, err)
	}
	ev := s.newEvent(rec, envelope.EventForward, now)
	ev.ForwardedTo = to
	evToken, err := envelope.SealEventFor(ctx, ev, s.cfg.Keys.SigningKey(), s.cfg.Resolver)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidArgument, err)
	}
	resp := &federationv1.ForwardCaseResponse{HandoverId: claims.ID, EventId: ev.ID}
	created := false
	extra := func(t *tx) error {
		created = false
		var cur inboxRecord
		ok, err := t.getJSON(key(pInbox, rec.HandoverID), &cur)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("%w: case %q", ErrNotFound, rec.HandoverID)
		}
		if e := cur.event(envelope.EventForward); e != nil {
			return errAlreadyForwarded{handover: cur.ForwardedHandoverID, event: e.ID}
		}
		if !allowed(cur.State, envelope.EventForward) {
			return fmt.Errorf("%w: case %s is %s; cannot forward", ErrConflict, cur.HandoverID, cur.State)
		}
		cur.ForwardedHandoverID, cur.ForwardedTo = claims.ID, to
		if err := s.putEvent(t, &cur, ev, evToken); err != nil {
			return err
		}
		resp.State = caseStateProto(cur.State)
		created = true
		return nil
	}
	if _, err := s.sealAndStore(ctx, claims, "", extra); err != nil {
		var af errAlreadyForwarded
		if errors.As(err, &af) {
			return &federationv1.ForwardCaseResponse{HandoverId: af.handover, EventId: af.event, State: federationv1.CaseState_CASE_STATE_FORWARDED}, nil
		}
		return nil, err
	}
	if created {
		s.stats.sent.Add(1)
		s.del.add(ev.ID, ev.Audience, 0)
	}
	return resp, nil
}

type errAlreadyForwarded struct{ handover, event string }

func (e errAlreadyForwarded) Error() string { return "case already forwarded as " + e.handover }

// Paging over sequence keys: the token is the next sequence number.

// pageRequest is what the list requests share.
type pageRequest interface {
	GetPageSize() int32
	GetPageToken() string
}

// listInOrder pages through records kept in arrival order: orderPrefix maps
// sequence numbers to ids, recPrefix holds each record (JSON) by id. add is
// called for each record in order and reports whether it took it; a page
// holds at most the requested size of taken records. It returns the token
// of the next page ("" at the end).
func listInOrder[R any](ctx context.Context, s *Service, orderPrefix, recPrefix string, req pageRequest, add func(*R) bool) (string, error) {
	done, err := s.enter()
	if err != nil {
		return "", err
	}
	defer done()
	size := pageSize(req.GetPageSize())
	from, err := pageStart(req.GetPageToken())
	if err != nil {
		return "", err
	}
	next := ""
	err = s.view(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = []byte(orderPrefix)
		it := txn.NewIterator(opts)
		defer it.Close()
		taken := 0
		for it.Seek(seqKey(orderPrefix, from)); it.ValidForPrefix(opts.Prefix); it.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			if taken == size {
				next = pageToken(seqOf(it.Item().Key(), orderPrefix))
				return nil
			}
			id, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			var rec R
			ok, err := getJSON(txn, key(recPrefix, string(id)), &rec)
			if err != nil {
				return err
			}
			if ok && add(&rec) {
				taken++
			}
		}
		return nil
	})
	return next, err
}

func pageSize(n int32) int {
	switch {
	case n <= 0:
		return 100
	case n > 1000:
		return 1000
	}
	return int(n)
}

func pageStart(tok string) (uint64, error) {
	if tok == "" {
		return 0, nil
	}
	v, err := strconv.ParseUint(tok, 10, 64)
	if err != nil {
		return 0, errInvalid("bad page_token")
	}
	return v, nil
}

func pageToken(seq uint64) string { return strconv.FormatUint(seq, 10) }

func seqOf(k []byte, prefix string) uint64 {
	if len(k) != len(prefix)+8 {
		return 0
	}
	return binary.BigEndian.Uint64(k[len(prefix):])
}
