package envelope

import (
	"context"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/verbund/verbund/keys"
)

// StatusDelivered is the only receipt status: the envelope was received,
// opened and verified.
const StatusDelivered = "delivered"

// Receipt is the receiver's signed acknowledgement of one envelope. It binds
// the exact envelope bytes through their SHA-256 digest.
type Receipt struct {
	Issuer     string    // "iss": receiving organisation (signs the receipt)
	Audience   string    // "aud": sending organisation
	HandoverID string    // "handover_jti": jti of the handover
	Digest     string    // "envelope_sha256": lower-case hex SHA-256 of the compact JWE
	ReceivedAt time.Time // "received_at" (seconds), as the receiver states it
	Status     string    // "status": StatusDelivered
}

type wireReceipt struct {
	Issuer     string `json:"iss"`
	Audience   string `json:"aud"`
	HandoverID string `json:"handover_jti"`
	Digest     string `json:"envelope_sha256"`
	ReceivedAt int64  `json:"received_at"`
	Status     string `json:"status"`
}

// NewReceipt returns the receipt for an opened handover.
func NewReceipt(o *Opened, receivedAt time.Time) Receipt {
	return Receipt{
		Issuer:     o.Claims.Audience,
		Audience:   o.Claims.Issuer,
		HandoverID: o.Claims.ID,
		Digest:     hex.EncodeToString(o.Digest[:]),
		ReceivedAt: time.Unix(receivedAt.Unix(), 0).UTC(),
		Status:     StatusDelivered,
	}
}

func (r *Receipt) validate() error {
	if err := checkText("iss", r.Issuer, maxNameLen, true); err != nil {
		return err
	}
	if err := checkText("aud", r.Audience, maxNameLen, true); err != nil {
		return err
	}
	if err := checkText("handover_jti", r.HandoverID, maxIDLen, true); err != nil {
		return err
	}
	if !isHexDigest(r.Digest) {
		return fmt.Errorf("%w: envelope_sha256 is not lower-case hex SHA-256", ErrClaims)
	}
	if r.ReceivedAt.IsZero() || r.ReceivedAt.Unix() <= 0 {
		return fmt.Errorf("%w: received_at missing", ErrClaims)
	}
	if r.Status != StatusDelivered {
		return fmt.Errorf("%w: status %q", ErrClaims, r.Status)
	}
	return nil
}

// SignReceipt signs r with the receiver's Ed25519 key as a compact JWS
// (typ verbund-receipt+jws). The output is deterministic: the same receipt
// signed with the same key gives byte-identical tokens.
func SignReceipt(r Receipt, receiverKey jose.JSONWebKey) (string, error) {
	if err := r.validate(); err != nil {
		return "", fmt.Errorf("receipt: %w", err)
	}
	payload, err := json.Marshal(wireReceipt{r.Issuer, r.Audience, r.HandoverID, r.Digest, r.ReceivedAt.Unix(), r.Status})
	if err != nil {
		return "", fmt.Errorf("envelope: receipt: %w", err)
	}
	return signCompact(payload, receiverKey, TypeReceiptJWS)
}

// VerifyReceipt verifies a receipt: the signing key is looked up for the
// receipt's issuer as valid at moment at, the issuer must be expectIssuer
// (the handover's audience) and the digest must be expectDigest. at is the
// registry moment the receipt is judged at, never its received_at: the
// current moment (keys.Now) for a receipt as it arrives, the moment it was
// recorded (OutboxEntry.receipt_recorded, TimelineItem.recorded) when
// verifying a stored receipt again, so receipts stay verifiable after the
// receiver rotates keys, is suspended or has a key revoked later.
func VerifyReceipt(ctx context.Context, receiptJWS string, resolver KeyResolver, expectIssuer string, expectDigest [32]byte, at keys.Moment) (*Receipt, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if len(receiptJWS) > MaxReceiptSize {
		return nil, fmt.Errorf("%w: receipt of %d bytes (max %d)", ErrTooLarge, len(receiptJWS), MaxReceiptSize)
	}
	if expectIssuer == "" {
		return nil, fmt.Errorf("%w: no expected receipt issuer given", ErrClaims)
	}
	payload, kid, iss, err := verifyJWS(ctx, receiptJWS, TypeReceiptJWS, resolver, at)
	if err != nil {
		return nil, fmt.Errorf("receipt: %w", err)
	}
	var w wireReceipt
	if err := decodeStrict(payload, &w); err != nil {
		return nil, fmt.Errorf("receipt claims: %w", err)
	}
	r := Receipt{w.Issuer, w.Audience, w.HandoverID, w.Digest, fromUnix(w.ReceivedAt), w.Status}
	if r.Issuer != iss {
		return nil, fmt.Errorf("%w: receipt iss %q is not the key owner %q", ErrClaims, r.Issuer, iss)
	}
	if err := r.validate(); err != nil {
		return nil, fmt.Errorf("receipt: %w", err)
	}
	if r.Issuer != expectIssuer {
		return nil, fmt.Errorf("%w: receipt signed by %q (key %q), expected %q", ErrClaims, r.Issuer, kid, expectIssuer)
	}
	want := hex.EncodeToString(expectDigest[:])
	if subtle.ConstantTimeCompare([]byte(r.Digest), []byte(want)) != 1 {
		return nil, fmt.Errorf("%w: receipt is for envelope %s, not %s", ErrClaims, r.Digest, want)
	}
	return &r, nil
}
