package handover

import (
	"context"
	"errors"
	"fmt"

	"connectrpc.com/connect"

	"github.com/verbund/verbund/federation/envelope"
)

// Errors of the Service. The Connect handler maps them (and the envelope
// package's sentinels) to Connect codes; see connectCode.
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
)

func errInvalid(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidArgument, fmt.Sprintf(format, a...))
}

func errUnavailable(msg string) error { return fmt.Errorf("%w: %s", ErrUnavailable, msg) }

// errCrash is what a test hook returns to simulate a crash at that point.
var errCrash = errors.New("handover: simulated crash")

// connectCode maps an error to the Connect code a peer or client sees.
// Senders treat InvalidArgument, AlreadyExists, PermissionDenied,
// FailedPrecondition, NotFound and ResourceExhausted from DeliverHandover /
// DeliverEvent as final; everything else is retried.
func connectCode(err error) connect.Code {
	var ce *connect.Error
	switch {
	case errors.As(err, &ce):
		return ce.Code()
	case errors.Is(err, ErrInvalidArgument):
		return connect.CodeInvalidArgument
	case errors.Is(err, ErrNotFound):
		return connect.CodeNotFound
	case errors.Is(err, ErrConflict):
		return connect.CodeFailedPrecondition
	case errors.Is(err, ErrReplay):
		return connect.CodeAlreadyExists
	case errors.Is(err, ErrUnknownHandover):
		return connect.CodePermissionDenied
	case errors.Is(err, ErrUnavailable), errors.Is(err, errCrash), errors.Is(err, errClosed):
		return connect.CodeUnavailable
	case errors.Is(err, envelope.ErrTooLarge):
		return connect.CodeResourceExhausted
	case errors.Is(err, envelope.ErrAudience):
		return connect.CodePermissionDenied
	case errors.Is(err, envelope.ErrExpired):
		return connect.CodeFailedPrecondition
	case errors.Is(err, envelope.ErrNotYetValid):
		// Clock skew between nodes: retry later.
		return connect.CodeUnavailable
	case errors.Is(err, envelope.ErrUnknownKey), errors.Is(err, envelope.ErrKeyInactive),
		errors.Is(err, envelope.ErrRevokedKey), errors.Is(err, envelope.ErrKeyNotOwned),
		errors.Is(err, envelope.ErrSignature), errors.Is(err, envelope.ErrDecrypt):
		// Retried by senders: the receiver's registry copy may lag behind a
		// key publication.
		return connect.CodeUnauthenticated
	case errors.Is(err, envelope.ErrMalformed), errors.Is(err, envelope.ErrNesting),
		errors.Is(err, envelope.ErrHeader), errors.Is(err, envelope.ErrAlgorithm),
		errors.Is(err, envelope.ErrCompressed), errors.Is(err, envelope.ErrInvalidKey),
		errors.Is(err, envelope.ErrClaims):
		return connect.CodeInvalidArgument
	case errors.Is(err, ErrAudit):
		return connect.CodeDataLoss
	case errors.Is(err, context.DeadlineExceeded):
		return connect.CodeDeadlineExceeded
	case errors.Is(err, context.Canceled):
		return connect.CodeCanceled
	}
	return connect.CodeInternal
}

func toConnect(err error) error {
	if err == nil {
		return nil
	}
	var ce *connect.Error
	if errors.As(err, &ce) {
		return err
	}
	return connect.NewError(connectCode(err), err)
}

// permanent reports whether a delivery error is final.
func permanent(err error) bool {
	switch connect.CodeOf(err) {
	case connect.CodeInvalidArgument, connect.CodeAlreadyExists, connect.CodePermissionDenied,
		connect.CodeFailedPrecondition, connect.CodeNotFound, connect.CodeResourceExhausted:
		return true
	}
	return false
}

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
