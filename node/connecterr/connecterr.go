// Package connecterr is the node's one map from domain errors (registry,
// handover, envelope) to the Connect codes clients and peers see. It is a
// package of its own, not a file of node, because two edges use it: the
// node's own services and the handover adapter (node/handoverapi), which the
// handover package's wire tests use without importing node.
//
// The codes are part of the API: senders of handovers treat some as final
// (see handoverapi's Peer), the command line prints them, clients retry on
// Unavailable and Unknown.
package connecterr

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"connectrpc.com/connect"

	"github.com/verbund/verbund/federation/envelope"
	"github.com/verbund/verbund/federation/handover"
	"github.com/verbund/verbund/node/diskspace"
	"github.com/verbund/verbund/registry"
)

// ReasonHeader carries a machine-readable reason with some errors, where the
// code alone does not tell a client what to do. Its one value today is
// ReasonDiskFull.
const ReasonHeader = "Verbund-Error-Reason"

// ReasonDiskFull marks a resource_exhausted error as a node refusing writes
// for lack of disk space (diskspace.ErrDiskFull): unlike a request that is
// too large, it is worth retrying later, at this node or (for a forwarded
// write) once the leader has space again.
const ReasonDiskFull = "disk_full"

// Code maps err to the Connect code a client or peer sees. A *connect.Error
// keeps its code; an unknown error is Internal.
func Code(err error) connect.Code {
	var ce *connect.Error
	switch {
	case errors.As(err, &ce):
		return ce.Code()

	// The node's disk guard (any write path).
	case errors.Is(err, diskspace.ErrDiskFull):
		return connect.CodeResourceExhausted

	// Registry (write admission, queries, reads).
	case errors.Is(err, registry.ErrInvalidArgument):
		return connect.CodeInvalidArgument
	case errors.Is(err, registry.ErrNotFound):
		return connect.CodeNotFound
	case errors.Is(err, registry.ErrInvalidSignature), errors.Is(err, registry.ErrUnknownKey):
		return connect.CodeUnauthenticated
	case errors.Is(err, registry.ErrPermissionDenied):
		return connect.CodePermissionDenied
	case errors.Is(err, registry.ErrPreconditionFailed):
		return connect.CodeFailedPrecondition
	case errors.Is(err, registry.ErrAlreadyExists):
		return connect.CodeAlreadyExists
	case errors.Is(err, registry.ErrStale):
		return connect.CodeAborted
	case errors.Is(err, registry.ErrTooLarge):
		return connect.CodeResourceExhausted
	case errors.Is(err, registry.ErrNotLeader), errors.Is(err, registry.ErrUnavailable):
		return connect.CodeUnavailable
	case errors.Is(err, registry.ErrIndeterminate):
		return connect.CodeUnknown

	// Handover service. Senders treat InvalidArgument, AlreadyExists,
	// PermissionDenied, FailedPrecondition, NotFound and ResourceExhausted
	// (except a full disk, see IsDiskFull) from DeliverHandover /
	// DeliverEvent as final; everything else is retried.
	case errors.Is(err, handover.ErrInvalidArgument):
		return connect.CodeInvalidArgument
	case errors.Is(err, handover.ErrNotFound):
		return connect.CodeNotFound
	case errors.Is(err, handover.ErrConflict):
		return connect.CodeFailedPrecondition
	case errors.Is(err, handover.ErrReplay):
		return connect.CodeAlreadyExists
	case errors.Is(err, handover.ErrUnknownHandover):
		return connect.CodePermissionDenied
	case errors.Is(err, handover.ErrUnavailable):
		return connect.CodeUnavailable
	case errors.Is(err, handover.ErrAudit):
		return connect.CodeDataLoss

	// Envelopes (handovers, events, receipts).
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

	case errors.Is(err, context.DeadlineExceeded):
		return connect.CodeDeadlineExceeded
	case errors.Is(err, context.Canceled):
		return connect.CodeCanceled
	}
	return connect.CodeInternal
}

// ToConnect returns err as a *connect.Error with the code of Code (nil
// stays nil; a *connect.Error is returned as it is). A full disk also gets
// ReasonHeader: ReasonDiskFull; an ErrIndeterminate gets IndeterminateHint
// in its message.
func ToConnect(err error) error {
	if err == nil {
		return nil
	}
	var ce *connect.Error
	if errors.As(err, &ce) {
		return err
	}
	if errors.Is(err, registry.ErrIndeterminate) && !strings.Contains(err.Error(), IndeterminateHint) {
		err = fmt.Errorf("%w (%s)", err, IndeterminateHint)
	}
	ce = connect.NewError(Code(err), err)
	if errors.Is(err, diskspace.ErrDiskFull) {
		ce.Meta().Set(ReasonHeader, ReasonDiskFull)
	}
	return ce
}

// IndeterminateHint is added to the message of every ErrIndeterminate a
// client sees (code Unknown): a write whose outcome is unknown, e.g. when
// the leader failed over during the call.
const IndeterminateHint = "the write may have been applied: retrying with the same command id is safe"

// IsDiskFull reports whether err, an error from another node's API, is that
// node refusing a write for lack of disk space (ToConnect's marking): a
// refusal to retry later, not a final one.
func IsDiskFull(err error) bool {
	var ce *connect.Error
	return errors.As(err, &ce) && ce.Code() == connect.CodeResourceExhausted &&
		ce.Meta().Get(ReasonHeader) == ReasonDiskFull
}

// Interceptor maps the errors of unary handlers with ToConnect. Streaming
// handlers (the change feed) return their errors as they are, as before.
func Interceptor() connect.Interceptor { return interceptor{} }

type interceptor struct{}

func (interceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		res, err := next(ctx, req)
		return res, ToConnect(err)
	}
}

func (interceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (interceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}
