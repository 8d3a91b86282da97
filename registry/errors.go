package registry

import (
	"errors"
	"fmt"
)

// Sentinel errors. Callers tell cases apart with errors.Is; the API maps them
// to Connect codes in one place (node/api). The Code of each is the stable
// string stored in CommandResult.error_code.
var (
	// ErrInvalidArgument: malformed key, missing field, oversize value.
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrNotFound: the organisation, service or offering does not exist.
	ErrNotFound = errors.New("not found")
	// ErrInvalidSignature: the JWS does not verify, or is not a JWS we accept.
	ErrInvalidSignature = errors.New("invalid signature")
	// ErrUnknownKey: the kid is not a registered signing key of the issuer.
	ErrUnknownKey = errors.New("unknown key")
	// ErrPermissionDenied: the issuer may not make this change.
	ErrPermissionDenied = errors.New("permission denied")
	// ErrPreconditionFailed: a conditional write's precondition does not hold.
	ErrPreconditionFailed = errors.New("precondition failed")
	// ErrAlreadyExists: the issuer already used the command id for a
	// command with other content (a true retry is answered as a duplicate).
	ErrAlreadyExists = errors.New("already exists")
	// ErrStale: the command is older than the stored entity or the replay window.
	ErrStale = errors.New("stale command")
	// ErrTooLarge: a request, command or value exceeds a limit.
	ErrTooLarge = errors.New("too large")
	// ErrNotLeader: this node cannot accept writes and forwarding is impossible.
	ErrNotLeader = errors.New("not leader")
	// ErrUnavailable: no leader or quorum right now; retry later.
	ErrUnavailable = errors.New("unavailable")
	// ErrIndeterminate: the write may or may not have been committed
	// (leadership lost or timed out after proposing). Retry with the same
	// command id: commands are idempotent.
	ErrIndeterminate = errors.New("outcome unknown")
)

// Stable error codes for CommandResult.error_code.
const (
	CodeInvalidArgument    = "invalid_argument"
	CodeNotFound           = "not_found"
	CodeInvalidSignature   = "invalid_signature"
	CodeUnknownKey         = "unknown_key"
	CodePermissionDenied   = "permission_denied"
	CodePreconditionFailed = "precondition_failed"
	CodeStale              = "stale"
	CodeAlreadyExists      = "already_exists"
	CodeTooLarge           = "too_large"
	CodeInternal           = "internal"
	// CodeFeatureLevel ("feature_level") is declared in features.go.
)

var codeOf = []struct {
	err  error
	code string
}{
	{ErrInvalidArgument, CodeInvalidArgument},
	{ErrNotFound, CodeNotFound},
	{ErrFeatureLevel, CodeFeatureLevel},
	{ErrInvalidSignature, CodeInvalidSignature},
	{ErrUnknownKey, CodeUnknownKey},
	{ErrPermissionDenied, CodePermissionDenied},
	{ErrPreconditionFailed, CodePreconditionFailed},
	{ErrStale, CodeStale},
	{ErrAlreadyExists, CodeAlreadyExists},
	{ErrTooLarge, CodeTooLarge},
}

// ErrorCode returns the stable code for err ("" for nil).
func ErrorCode(err error) string {
	if err == nil {
		return ""
	}
	for _, c := range codeOf {
		if errors.Is(err, c.err) {
			return c.code
		}
	}
	return CodeInternal
}

// ErrorFromCode turns a stored code and message back into a wrapped sentinel.
func ErrorFromCode(code, msg string) error {
	if code == "" {
		return nil
	}
	for _, c := range codeOf {
		if c.code == code {
			return fmt.Errorf("%w: %s", c.err, msg)
		}
	}
	return errors.New(msg)
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidArgument, fmt.Sprintf(format, args...))
}
