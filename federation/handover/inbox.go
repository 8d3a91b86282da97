package handover

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/verbund/verbund/federation/envelope"
	"github.com/verbund/verbund/keys"
)

// DeliverHandover takes a handover envelope from another node: it checks
// everything (envelope.Open: size, format, algorithms, decryption, the
// sender's signature against the registry, audience, lifetime), then stores
// the case in the inbox together with the dedupe record keyed by jti and
// the audit entry, in one synced commit, and only then returns the signed
// receipt.
//
// The same envelope delivered again returns the byte-identical receipt and
// changes nothing (also after a restart). Another envelope with an already
// delivered jti is refused with ErrReplay and leaves no trace.
func (s *Service) DeliverHandover(ctx context.Context, token string) (string, error) {
	done, err := s.enter()
	if err != nil {
		return "", err
	}
	defer done()
	a, err := s.arrive(ctx, token, kindHandover, "envelope", envelope.MaxEnvelopeSize)
	if err != nil || a.redelivered {
		return a.receipt, err
	}
	digest, now, at := a.digest, a.now, a.at
	o, err := envelope.Open(ctx, token, s.cfg.Keys.DecryptionKeys(), s.cfg.Resolver, s.cfg.OrgID, now)
	if err != nil {
		return "", s.reject(kindHandover, err)
	}
	c := o.Claims
	receipt, err := envelope.SignReceipt(envelope.NewReceipt(o, now), s.cfg.Keys.SigningKey())
	if err != nil {
		return "", err
	}
	rec := inboxRecord{
		HandoverID: c.ID, From: c.Issuer, CaseID: c.CaseID, TrackingCode: c.TrackingCode, Leika: c.ServiceKey,
		Reason: c.Reason, State: caseReceived, IssuedAt: ms(c.IssuedAt), ReceivedAt: ms(now), UpdatedAt: ms(now),
		Digest: digest, Receipt: receipt, SignerKID: o.SignerKID, Previous: c.Previous, RecordedIndex: at.Index,
	}
	// Encode the (possibly large) body here, not on the committer.
	body, err := json.Marshal(caseBody{SignedJWS: o.SignedJWS, Data: c.Data, Attachments: c.Attachments})
	if err != nil {
		return "", err
	}
	seen := seenRecord{Kind: kindHandover, Digest: digest, Receipt: receipt, From: c.Issuer, At: ms(now)}
	var result string
	dup := false
	err = s.com.do(func(t *tx) error {
		dup = false
		if r, ok, err := s.checkSeen(t, c.ID, digest); err != nil || ok {
			result, dup = r, ok
			return err
		}
		seq, err := t.nextSeq(pInboxOrder)
		if err != nil {
			return err
		}
		rec.Seq = seq
		if err := t.setJSON(key(pInbox, c.ID), rec); err != nil {
			return err
		}
		t.set(key(pInboxBody, c.ID), body)
		t.set(seqKey(pInboxOrder, seq), []byte(c.ID))
		if err := s.putSeen(t, c.ID, seen); err != nil {
			return err
		}
		if c.TrackingCode != "" {
			t.set(trackKey(c.TrackingCode, c.ID), []byte("in"))
		}
		if err := t.count(rec.ReceivedAt, rec.Leika, rec.From, true, func(c *statsCounters) { c.Handovers++ }); err != nil {
			return err
		}
		t.audit(AuditHandoverReceived, c.ID, digest, c.Issuer)
		result = receipt
		return nil
	})
	if err != nil {
		if errors.Is(err, ErrReplay) {
			return "", s.reject(kindHandover, fmt.Errorf("handover %s from %s: %w", c.ID, c.Issuer, err))
		}
		return "", err
	}
	if dup {
		s.stats.duplicates.Add(1)
	} else {
		s.stats.received.Add(1)
		s.log.Debug("handover received", "jti", c.ID, "from", c.Issuer, "case", c.CaseID)
	}
	if err := s.crashAt(fpAfterInboxWrite, c.ID); err != nil {
		return "", err
	}
	return result, nil
}

// DeliverEvent takes a lifecycle event about a handover this organisation
// sent, from the handover's recipient. Same checks and guarantees as
// DeliverHandover; in addition the handover must be one this organisation
// sent to the event's issuer (else ErrUnknownHandover).
func (s *Service) DeliverEvent(ctx context.Context, token string) (string, error) {
	done, err := s.enter()
	if err != nil {
		return "", err
	}
	defer done()
	a, err := s.arrive(ctx, token, kindEvent, "event", envelope.MaxEventSize)
	if err != nil || a.redelivered {
		return a.receipt, err
	}
	digest, now, at := a.digest, a.now, a.at
	o, err := envelope.OpenEvent(ctx, token, s.cfg.Keys.DecryptionKeys(), s.cfg.Resolver, s.cfg.OrgID, now)
	if err != nil {
		return "", s.reject(kindEvent, err)
	}
	ev := o.Event
	receipt, err := envelope.SignReceipt(envelope.Receipt{
		Issuer: s.cfg.OrgID, Audience: ev.Issuer, HandoverID: ev.ID, Digest: digest,
		ReceivedAt: time.Unix(now.Unix(), 0).UTC(), Status: envelope.StatusDelivered,
	}, s.cfg.Keys.SigningKey())
	if err != nil {
		return "", err
	}
	rec := eventRecord{
		ID: ev.ID, HandoverID: ev.HandoverID, From: ev.Issuer, Type: string(ev.Type), IssuedAt: ms(ev.IssuedAt),
		SignedJWS: o.SignedJWS, Digest: digest, Receipt: receipt, ReceivedAt: ms(now), Problem: ev.Problem,
		ForwardedTo: ev.ForwardedTo, RecordedIndex: at.Index,
	}
	seen := seenRecord{Kind: kindEvent, Digest: digest, Receipt: receipt, From: ev.Issuer, At: ms(now)}
	var result string
	dup := false
	err = s.com.do(func(t *tx) error {
		dup = false
		if r, ok, err := s.checkSeen(t, ev.ID, digest); err != nil || ok {
			result, dup = r, ok
			return err
		}
		var out outboxRecord
		ok, err := t.getJSON(key(pOutbox, ev.HandoverID), &out)
		if err != nil {
			return err
		}
		if !ok || out.Kind != kindHandover || out.To != ev.Issuer {
			return fmt.Errorf("%w: %s did not receive handover %q from %s", ErrUnknownHandover, ev.Issuer, ev.HandoverID, s.cfg.OrgID)
		}
		if err := t.setJSON(key(pEvent, ev.ID), rec); err != nil {
			return err
		}
		t.set(key(pHandoverEv, ev.HandoverID, ev.ID), nil)
		if err := s.putSeen(t, ev.ID, seen); err != nil {
			return err
		}
		delivered := out.DeliveredAt
		if delivered == 0 {
			delivered = out.CreatedAt // the event overtook our receipt
		}
		if err := t.countDecision(rec.ReceivedAt, out.Leika, out.To, false, ev.Type, delivered); err != nil {
			return err
		}
		t.audit(AuditEventReceived, ev.ID, digest, ev.Issuer)
		result = receipt
		return nil
	})
	if err != nil {
		if errors.Is(err, ErrReplay) || errors.Is(err, ErrUnknownHandover) {
			return "", s.reject(kindEvent, fmt.Errorf("event %s from %s: %w", ev.ID, ev.Issuer, err))
		}
		return "", err
	}
	if dup {
		s.stats.duplicates.Add(1)
	} else {
		s.stats.received.Add(1)
		s.log.Debug("event received", "jti", ev.ID, "event", ev.Type, "handover", ev.HandoverID, "from", ev.Issuer)
	}
	if err := s.crashAt(fpAfterInboxWrite, ev.ID); err != nil {
		return "", err
	}
	return result, nil
}

// reject counts and logs a refused delivery.
// arrival is a token at the door, before it is opened.
type arrival struct {
	digest      string      // hex SHA-256 of the token
	now         time.Time   // when it arrived
	at          keys.Moment // the registry moment it is judged at
	redelivered bool        // delivered before: receipt is the stored one
	receipt     string
}

// arrive runs what every delivery does before its token is opened: the size
// limit, the answer to a byte-identical redelivery (its stored receipt, with
// nothing changed), and the registry moment the token is judged at.
func (s *Service) arrive(ctx context.Context, token, kind, what string, max int) (arrival, error) {
	if len(token) > max {
		return arrival{}, s.reject(kind, fmt.Errorf("%w: %s of %d bytes (max %d)", envelope.ErrTooLarge, what, len(token), max))
	}
	d := envelope.Digest(token)
	a := arrival{digest: hex.EncodeToString(d[:])}
	if r, ok, err := s.duplicate(a.digest); err != nil || ok {
		a.redelivered, a.receipt = ok, r
		return a, err
	}
	if err := s.admitWrite(); err != nil {
		return a, err // not a rejection of the token: the sender retries
	}
	a.now = s.now()
	var err error
	a.at, err = s.position(ctx, a.now)
	return a, err
}

func (s *Service) reject(kind string, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err // the caller went away: not a rejection
	}
	reason := rejectReason(err)
	s.stats.reject(reason)
	s.log.Warn("delivery rejected", "kind", kind, "reason", reason, "err", err)
	return err
}

// duplicate answers a delivery of exactly the bytes of an earlier one with
// the stored receipt, without opening it again (it may have expired since).
func (s *Service) duplicate(digest string) (string, bool, error) {
	if s.skipped(fpDedupe) {
		return "", false, nil
	}
	var receipt string
	found := false
	err := s.view(func(txn *badger.Txn) error {
		it, err := txn.Get(key(pDigest, digest))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		jti, err := it.ValueCopy(nil)
		if err != nil {
			return err
		}
		var seen seenRecord
		ok, err := getJSON(txn, key(pSeen, string(jti)), &seen)
		if err != nil || !ok || seen.Digest != digest {
			return err
		}
		receipt, found = seen.Receipt, true
		return nil
	})
	if err != nil || !found {
		return "", false, err
	}
	// What we read is committed; wait until the batch that committed it is
	// also synced before answering.
	if err := s.com.do(func(*tx) error { return nil }); err != nil {
		return "", false, err
	}
	s.stats.duplicates.Add(1)
	return receipt, true, nil
}

// checkSeen looks up the dedupe record of jti inside a commit: the stored
// receipt if digest matches, ErrReplay if not.
func (s *Service) checkSeen(t *tx, jti, digest string) (string, bool, error) {
	if s.skipped(fpDedupe) {
		return "", false, nil
	}
	var seen seenRecord
	ok, err := t.getJSON(key(pSeen, jti), &seen)
	if err != nil || !ok {
		return "", false, err
	}
	if seen.Digest != digest {
		return "", false, fmt.Errorf("%w (delivered %s with digest %s)", ErrReplay, time.UnixMilli(seen.At).UTC().Format(time.RFC3339), seen.Digest)
	}
	return seen.Receipt, true, nil
}

func (s *Service) putSeen(t *tx, jti string, seen seenRecord) error {
	if s.skipped(fpDedupe) {
		return nil
	}
	if err := t.setJSON(key(pSeen, jti), seen); err != nil {
		return err
	}
	t.set(key(pDigest, seen.Digest), []byte(jti))
	return nil
}
