package handover

import (
	"errors"
	"fmt"

	"github.com/verbund/verbund/federation/envelope"
)

// Errors of the Service. The node's edge maps them (and the envelope
// package's sentinels) to Connect codes in one place (node/connecterr).
var (
	// ErrInvalidArgument: a request field is missing or malformed.
	ErrInvalidArgument = errors.New("handover: invalid argument")
	// ErrNotFound: no such case, or no record for a tracking code.
	ErrNotFound = errors.New("handover: not found")
	// ErrConflict: the case is in a state that does not allow the step.
	ErrConflict = errors.New("handover: case state does not allow this")
	// ErrReplay: a token with an already delivered jti but different bytes.
	ErrReplay = errors.New("handover: jti already delivered with different content")
	// ErrUnknownHandover: an event about a handover this organisation did
	// not send to the event's issuer.
	ErrUnknownHandover = errors.New("handover: event for an unknown handover")
	// ErrUnavailable: the service is shutting down (retry elsewhere/later).
	ErrUnavailable = errors.New("handover: unavailable")
	// ErrRefused: a Peer refused a delivery for good; wrapped around the
	// peer's own error by the Peer implementation. See Peer.
	ErrRefused = errors.New("handover: refused by the peer")
)

func errInvalid(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidArgument, fmt.Sprintf(format, a...))
}

func errUnavailable(msg string) error { return fmt.Errorf("%w: %s", ErrUnavailable, msg) }

// errCrash is what a test hook returns to simulate a crash at that point.
// It is an ErrUnavailable: callers see "retry".
var errCrash = fmt.Errorf("%w: simulated crash", ErrUnavailable)

// permanent reports whether a delivery error is final: the peer refused
// the token for good (see Peer). Everything else is retried.
func permanent(err error) bool { return errors.Is(err, ErrRefused) }

// rejectReason names the reason a delivery was refused, for the counters.
func rejectReason(err error) string {
	for _, r := range []struct {
		err  error
		name string
	}{
		{ErrReplay, "replay"}, {ErrUnknownHandover, "unknown_handover"},
		{envelope.ErrTooLarge, "too_large"}, {envelope.ErrMalformed, "malformed"},
		{envelope.ErrNesting, "nesting"}, {envelope.ErrHeader, "header"},
		{envelope.ErrAlgorithm, "algorithm"}, {envelope.ErrCompressed, "compressed"},
		{envelope.ErrInvalidKey, "invalid_key"}, {envelope.ErrUnknownKey, "unknown_key"},
		{envelope.ErrRevokedKey, "revoked_key"}, {envelope.ErrKeyNotOwned, "key_not_owned"},
		{envelope.ErrKeyInactive, "key_inactive"}, {envelope.ErrSignature, "signature"},
		{envelope.ErrDecrypt, "decrypt"}, {envelope.ErrAudience, "audience"},
		{envelope.ErrExpired, "expired"}, {envelope.ErrNotYetValid, "not_yet_valid"},
		{envelope.ErrClaims, "claims"}, {ErrInvalidArgument, "invalid_argument"},
	} {
		if errors.Is(err, r.err) {
			return r.name
		}
	}
	return "other"
}
