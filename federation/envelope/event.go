package envelope

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/verbund/verbund/keys"
)

// EventType is a step in a handed-over case's lifecycle, reported by the
// receiver back to the sender.
type EventType string

// Event types.
const (
	EventAccept   EventType = "accept"   // the receiver took the case on
	EventReject   EventType = "reject"   // the receiver refused it (Problem says why)
	EventComplete EventType = "complete" // the case was completed
	EventForward  EventType = "forward"  // the case was forwarded (ForwardedTo says where)
)

// Problem is an RFC 7807 problem description, required for EventReject.
type Problem struct {
	Type   string `json:"type"`             // URI reference identifying the problem type
	Title  string `json:"title"`            // short summary
	Detail string `json:"detail,omitempty"` // explanation for this occurrence
}

// Event is the signed content of a lifecycle event (like a FIT-Connect
// security event token).
type Event struct {
	ID          string    // "jti": unique id of this event
	Issuer      string    // "iss": organisation reporting the event
	Audience    string    // "aud": organisation that sent the handover
	IssuedAt    time.Time // "iat" (seconds)
	Expiry      time.Time // "exp" (seconds)
	Type        EventType // "event"
	HandoverID  string    // "handover_jti": the handover this event is about
	CaseID      string    // "case_id": the sender's case id
	Digest      string    // "envelope_sha256": hex SHA-256 of the handover envelope (optional)
	Problem     *Problem  // "problem": required for reject, absent otherwise
	ForwardedTo string    // "forwarded_to": required for forward, absent otherwise
}

// OpenedEvent is an event that passed every check of OpenEvent.
type OpenedEvent struct {
	Event        Event
	Digest       [32]byte // SHA-256 of the compact JWE
	SignerKID    string
	RecipientKID string
	SignedJWS    string
}

type wireEvent struct {
	ID          string    `json:"jti"`
	Issuer      string    `json:"iss"`
	Audience    string    `json:"aud"`
	IssuedAt    int64     `json:"iat"`
	Expiry      int64     `json:"exp"`
	Type        EventType `json:"event"`
	HandoverID  string    `json:"handover_jti"`
	CaseID      string    `json:"case_id"`
	Digest      string    `json:"envelope_sha256,omitempty"`
	Problem     *Problem  `json:"problem,omitempty"`
	ForwardedTo string    `json:"forwarded_to,omitempty"`
}

// Validate checks the event for completeness and form.
func (e *Event) Validate() error {
	for _, f := range []struct {
		name, v string
		max     int
	}{{"jti", e.ID, maxIDLen}, {"iss", e.Issuer, maxNameLen}, {"aud", e.Audience, maxNameLen},
		{"handover_jti", e.HandoverID, maxIDLen}, {"case_id", e.CaseID, maxNameLen}} {
		if err := checkText(f.name, f.v, f.max, true); err != nil {
			return err
		}
	}
	if err := checkLifetime(e.IssuedAt, time.Time{}, e.Expiry); err != nil {
		return err
	}
	if e.Digest != "" && !isHexDigest(e.Digest) {
		return fmt.Errorf("%w: envelope_sha256 is not lower-case hex SHA-256", ErrClaims)
	}
	switch e.Type {
	case EventAccept, EventComplete, EventReject, EventForward:
	default:
		return fmt.Errorf("%w: unknown event type %q", ErrClaims, e.Type)
	}
	if (e.Type == EventReject) != (e.Problem != nil) {
		return fmt.Errorf("%w: a problem is required for reject and only for reject", ErrClaims)
	}
	if p := e.Problem; p != nil {
		if err := checkText("problem.type", p.Type, maxTextLen, true); err != nil {
			return err
		}
		if err := checkText("problem.title", p.Title, maxTextLen, true); err != nil {
			return err
		}
		if len(p.Detail) > maxTextLen {
			return fmt.Errorf("%w: problem.detail longer than %d bytes", ErrClaims, maxTextLen)
		}
	}
	if (e.Type == EventForward) != (e.ForwardedTo != "") {
		return fmt.Errorf("%w: forwarded_to is required for forward and only for forward", ErrClaims)
	}
	return checkText("forwarded_to", e.ForwardedTo, maxNameLen, false)
}

// SealEvent signs an event with the reporter's key and encrypts it to the
// handover sender's encryption key (typ verbund-event+jwe).
func SealEvent(ctx context.Context, e Event, senderKey, recipientEnc jose.JSONWebKey) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	if err := e.Validate(); err != nil {
		return "", fmt.Errorf("seal event: %w", err)
	}
	payload, err := json.Marshal(wireEvent{e.ID, e.Issuer, e.Audience, unix(e.IssuedAt), unix(e.Expiry),
		e.Type, e.HandoverID, e.CaseID, e.Digest, e.Problem, e.ForwardedTo})
	if err != nil {
		return "", fmt.Errorf("envelope: seal event: %w", err)
	}
	return sealNested(eventKind, payload, senderKey, recipientEnc)
}

// SealEventFor is SealEvent with the recipient's current encryption key
// looked up through resolver for e.Audience.
func SealEventFor(ctx context.Context, e Event, senderKey jose.JSONWebKey, resolver KeyResolver) (string, error) {
	enc, err := resolver.EncryptionKey(ctx, e.Audience)
	if err != nil {
		return "", fmt.Errorf("envelope: encryption key of %q: %w", e.Audience, err)
	}
	return SealEvent(ctx, e, senderKey, enc)
}

// OpenEvent checks and opens an event token addressed to expectAudience,
// with the same checks as Open.
func OpenEvent(ctx context.Context, token string, decKeys []jose.JSONWebKey, resolver KeyResolver, expectAudience string, now time.Time) (*OpenedEvent, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if expectAudience == "" {
		return nil, fmt.Errorf("%w: no expected audience given", ErrAudience)
	}
	o, err := openNested(ctx, eventKind, token, decKeys, resolver, now)
	if err != nil {
		return nil, err
	}
	e, err := decodeEvent(o.payload, o.issuer)
	if err != nil {
		return nil, err
	}
	if e.Audience != expectAudience {
		return nil, fmt.Errorf("%w: event for %q, not %q", ErrAudience, e.Audience, expectAudience)
	}
	if err := checkTime(e.IssuedAt, time.Time{}, e.Expiry, now); err != nil {
		return nil, fmt.Errorf("event %s: %w", e.ID, err)
	}
	return &OpenedEvent{Event: *e, Digest: Digest(token), SignerKID: o.signerKID, RecipientKID: o.recipientKID, SignedJWS: o.jws}, nil
}

// VerifyEvent verifies the inner, signed form of an event (compact JWS, typ
// verbund-event+jws) as its recipient holds it, e.g. in a case timeline:
// the same header and claim checks as OpenEvent, with the issuer's signing
// key as valid at moment at: the registry moment the recipient recorded
// the event at (never the event's iat), so old events verify after key
// rotation, suspension or revocation. The event's lifetime is not checked:
// it is a historical record.
func VerifyEvent(ctx context.Context, jws string, resolver KeyResolver, at keys.Moment) (*Event, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if len(jws) > MaxEventSize {
		return nil, fmt.Errorf("%w: event JWS of %d bytes (max %d)", ErrTooLarge, len(jws), MaxEventSize)
	}
	payload, _, iss, err := verifyJWS(ctx, jws, TypeEventJWS, resolver, at)
	if err != nil {
		return nil, fmt.Errorf("event: %w", err)
	}
	e, err := decodeEvent(payload, iss)
	if err != nil {
		return nil, err
	}
	if e.IssuedAt.Unix() <= 0 {
		return nil, fmt.Errorf("event: %w: iat missing", ErrClaims)
	}
	return e, nil
}

// decodeEvent decodes and validates verified event claims signed by the
// key owner iss.
func decodeEvent(payload []byte, iss string) (*Event, error) {
	var w wireEvent
	if err := decodeStrict(payload, &w); err != nil {
		return nil, fmt.Errorf("event claims: %w", err)
	}
	e := Event{w.ID, w.Issuer, w.Audience, fromUnix(w.IssuedAt), fromUnix(w.Expiry), w.Type,
		w.HandoverID, w.CaseID, w.Digest, w.Problem, w.ForwardedTo}
	if e.Issuer != iss {
		return nil, fmt.Errorf("%w: iss %q is not the key owner %q", ErrClaims, e.Issuer, iss)
	}
	if err := e.Validate(); err != nil {
		return nil, fmt.Errorf("event: %w", err)
	}
	return &e, nil
}
