package handover

import (
	"crypto/rand"
	"encoding/json"
	"strings"
	"time"

	"github.com/verbund/verbund/federation/envelope"
	federationv1 "github.com/verbund/verbund/proto/gen/verbund/federation/v1"
)

// Stored records (JSON). Big payloads (tokens, case bodies) are stored
// under their own keys so that small state changes do not rewrite them.

const (
	pOutboxToken = "ho/ot/" // <id> -> compact JWE
	pInboxBody   = "ho/ib/" // <jti> -> caseBody
)

// Outbox kinds and states as stored.
const (
	kindHandover = "handover"
	kindEvent    = "event"

	statePending   = "pending"
	stateDelivered = "delivered"
	stateFailed    = "failed"
)

// Case states as stored.
const (
	caseReceived  = "received"
	caseAccepted  = "accepted"
	caseRejected  = "rejected"
	caseCompleted = "completed"
	caseForwarded = "forwarded"
)

type outboxRecord struct {
	ID           string `json:"id"`
	Seq          uint64 `json:"seq"`
	Kind         string `json:"kind"`
	To           string `json:"to"`
	Digest       string `json:"digest"`
	State        string `json:"state"`
	Attempts     uint32 `json:"attempts,omitempty"`
	LastError    string `json:"last_error,omitempty"`
	Receipt      string `json:"receipt,omitempty"`
	CreatedAt    int64  `json:"created_at"`
	DeliveredAt  int64  `json:"delivered_at,omitempty"`
	HandoverID   string `json:"handover_id,omitempty"` // events: the handover they are about
	EventType    string `json:"event_type,omitempty"`
	ForwardedTo  string `json:"forwarded_to,omitempty"`
	TrackingCode string `json:"tracking_code,omitempty"`
	CaseID       string `json:"case_id,omitempty"`
	// Leika is the service of a handover (for its statistics).
	Leika string `json:"leika,omitempty"`
	// ReceiptIndex is the registry index recorded when the receipt was
	// verified and accepted (with DeliveredAt: the moment to verify it at).
	ReceiptIndex uint64 `json:"receipt_index,omitempty"`
}

type issuedEvent struct {
	ID          string            `json:"id"`
	Type        string            `json:"type"`
	At          int64             `json:"at"`
	Problem     *envelope.Problem `json:"problem,omitempty"`
	ForwardedTo string            `json:"forwarded_to,omitempty"`
}

type inboxRecord struct {
	HandoverID          string         `json:"jti"`
	Seq                 uint64         `json:"seq"`
	From                string         `json:"from"`
	CaseID              string         `json:"case_id"`
	TrackingCode        string         `json:"tracking_code,omitempty"`
	Leika               string         `json:"leika"`
	Reason              string         `json:"reason,omitempty"`
	State               string         `json:"state"`
	IssuedAt            int64          `json:"iat"`
	ReceivedAt          int64          `json:"received_at"`
	UpdatedAt           int64          `json:"updated_at"`
	Digest              string         `json:"digest"`
	Receipt             string         `json:"receipt"`
	SignerKID           string         `json:"signer_kid"`
	Previous            []envelope.Hop `json:"previous,omitempty"`
	Events              []issuedEvent  `json:"events,omitempty"`
	ForwardedHandoverID string         `json:"forwarded_handover_id,omitempty"`
	ForwardedTo         string         `json:"forwarded_to,omitempty"`
	// RecordedIndex is the registry index recorded when the handover was
	// taken in (with ReceivedAt: the moment its receipt verifies at).
	RecordedIndex uint64 `json:"recorded_index,omitempty"`
}

func (r *inboxRecord) event(typ envelope.EventType) *issuedEvent {
	for i := range r.Events {
		if r.Events[i].Type == string(typ) {
			return &r.Events[i]
		}
	}
	return nil
}

type caseBody struct {
	SignedJWS   string                `json:"jws"`
	Data        json.RawMessage       `json:"data,omitempty"`
	Attachments []envelope.Attachment `json:"attachments,omitempty"`
}

// seenRecord is the dedupe record of a token taken in, keyed by its jti.
type seenRecord struct {
	Kind    string `json:"kind"`
	Digest  string `json:"digest"`
	Receipt string `json:"receipt"`
	From    string `json:"from"`
	At      int64  `json:"at"`
}

// eventRecord is an event received about a handover we sent.
type eventRecord struct {
	ID          string            `json:"id"`
	HandoverID  string            `json:"handover_id"`
	From        string            `json:"from"`
	Type        string            `json:"type"`
	IssuedAt    int64             `json:"iat"`
	SignedJWS   string            `json:"jws"`
	Digest      string            `json:"digest"`
	Receipt     string            `json:"receipt"`
	ReceivedAt  int64             `json:"received_at"`
	Problem     *envelope.Problem `json:"problem,omitempty"`
	ForwardedTo string            `json:"forwarded_to,omitempty"`
	// RecordedIndex is the registry index recorded when the event was
	// taken in (with ReceivedAt: the moment it verifies at).
	RecordedIndex uint64 `json:"recorded_index,omitempty"`
}

type sendResult struct {
	HandoverID   string `json:"jti"`
	TrackingCode string `json:"tracking_code"`
	CaseID       string `json:"case_id"`
	Digest       string `json:"digest"`
}

// Tracking codes: 3 groups of 4 from an alphabet without look-alikes
// (60 bits), "VB-XXXX-XXXX-XXXX".
const codeAlphabet = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"

func newTrackingCode() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	var sb strings.Builder
	sb.WriteString("VB")
	for i, c := range b {
		if i%4 == 0 {
			sb.WriteByte('-')
		}
		sb.WriteByte(codeAlphabet[int(c)%len(codeAlphabet)])
	}
	return sb.String()
}

// checkCode refuses a tracking code that is not 4-64 characters of
// [A-Za-z0-9-_.].
func checkCode(s string) error {
	if !validToken(s, 4, 64) {
		return errInvalid("tracking_code must be 4-64 characters of [A-Za-z0-9-_.]")
	}
	return nil
}

// validToken: lo-hi characters of [A-Za-z0-9-_.].
func validToken(s string, lo, hi int) bool {
	if len(s) < lo || len(s) > hi {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

func ms(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func caseStateProto(s string) federationv1.CaseState {
	switch s {
	case caseReceived:
		return federationv1.CaseState_CASE_STATE_RECEIVED
	case caseAccepted:
		return federationv1.CaseState_CASE_STATE_ACCEPTED
	case caseRejected:
		return federationv1.CaseState_CASE_STATE_REJECTED
	case caseCompleted:
		return federationv1.CaseState_CASE_STATE_COMPLETED
	case caseForwarded:
		return federationv1.CaseState_CASE_STATE_FORWARDED
	}
	return federationv1.CaseState_CASE_STATE_UNSPECIFIED
}

func outboxStateProto(s string) federationv1.OutboxState {
	switch s {
	case statePending:
		return federationv1.OutboxState_OUTBOX_STATE_PENDING
	case stateDelivered:
		return federationv1.OutboxState_OUTBOX_STATE_DELIVERED
	case stateFailed:
		return federationv1.OutboxState_OUTBOX_STATE_FAILED
	}
	return federationv1.OutboxState_OUTBOX_STATE_UNSPECIFIED
}

func eventTypeProto(t string) federationv1.EventType {
	switch envelope.EventType(t) {
	case envelope.EventAccept:
		return federationv1.EventType_EVENT_TYPE_ACCEPTED
	case envelope.EventReject:
		return federationv1.EventType_EVENT_TYPE_REJECTED
	case envelope.EventComplete:
		return federationv1.EventType_EVENT_TYPE_COMPLETED
	case envelope.EventForward:
		return federationv1.EventType_EVENT_TYPE_FORWARDED
	}
	return federationv1.EventType_EVENT_TYPE_UNSPECIFIED
}

func problemProto(p *envelope.Problem) *federationv1.Problem {
	if p == nil {
		return nil
	}
	return &federationv1.Problem{Type: p.Type, Title: p.Title, Detail: p.Detail}
}

func (r *outboxRecord) proto() *federationv1.OutboxEntry {
	e := &federationv1.OutboxEntry{
		Id: r.ID, ToOrganisationId: r.To, State: outboxStateProto(r.State), Attempts: r.Attempts,
		LastError: r.LastError, Receipt: r.Receipt, CreatedAtUnixMs: r.CreatedAt, DeliveredAtUnixMs: r.DeliveredAt,
		EnvelopeSha256: r.Digest, HandoverId: r.HandoverID, EventType: eventTypeProto(r.EventType),
		TrackingCode: r.TrackingCode, ReceiptRecorded: momentProto(r.ReceiptIndex, r.DeliveredAt),
	}
	switch r.Kind {
	case kindHandover:
		e.Kind = federationv1.OutboxKind_OUTBOX_KIND_HANDOVER
	case kindEvent:
		e.Kind = federationv1.OutboxKind_OUTBOX_KIND_EVENT
	}
	return e
}

func (r *inboxRecord) summary() *federationv1.CaseSummary {
	return &federationv1.CaseSummary{
		HandoverId: r.HandoverID, CaseId: r.CaseID, FromOrganisationId: r.From, TrackingCode: r.TrackingCode,
		LeikaKey: r.Leika, Reason: r.Reason, State: caseStateProto(r.State), ReceivedAtUnixMs: r.ReceivedAt,
		UpdatedAtUnixMs: r.UpdatedAt, EnvelopeSha256: r.Digest,
	}
}
