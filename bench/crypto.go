package bench

import (
	"context"
	"errors"
	"fmt"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/verbund/verbund/federation/envelope"
	"github.com/verbund/verbund/keys"
	"github.com/verbund/verbund/registry"
)

// CryptoCosts are single-core costs of the cryptographic steps of a write
// and of a handover, measured in this run.
type CryptoCosts struct {
	VerifyCommand time.Duration // parse + Ed25519 verification of one signed command (JWS)
	Seal          time.Duration // sender: sign the claims (JWS) and encrypt them (JWE)
	Open          time.Duration // recipient: decrypt the JWE and verify the inner JWS
	SignReceipt   time.Duration // recipient: sign the delivery receipt
	VerifyReceipt time.Duration // sender: verify the receipt
}

// Handover is the crypto cost of one handover end to end.
func (c CryptoCosts) Handover() time.Duration {
	return c.Seal + c.Open + c.SignReceipt + c.VerifyReceipt
}

// staticResolver resolves the keys of two organisations.
type staticResolver struct {
	sig map[string]jose.JSONWebKey
	enc map[string]jose.JSONWebKey
}

func (r staticResolver) VerificationKey(_ context.Context, org, kid string, _ keys.Moment) (jose.JSONWebKey, error) {
	k, ok := r.sig[org]
	if !ok || k.KeyID != kid {
		return jose.JSONWebKey{}, errors.New("unknown key")
	}
	return k, nil
}

func (r staticResolver) EncryptionKey(_ context.Context, org string) (jose.JSONWebKey, error) {
	k, ok := r.enc[org]
	if !ok {
		return jose.JSONWebKey{}, errors.New("unknown key")
	}
	return k, nil
}

// timeEach runs f repeatedly for about d (at least 20 times) and returns
// the mean time per call.
func timeEach(d time.Duration, f func() error) (time.Duration, error) {
	start := time.Now()
	n := 0
	for n < 20 || time.Since(start) < d {
		if err := f(); err != nil {
			return 0, err
		}
		n++
	}
	return time.Since(start) / time.Duration(n), nil
}

// MeasureCrypto measures the costs with fresh keys of the kinds the
// network uses (keys.GenerateSigning, keys.GenerateEncryption), each step
// as the write and handover paths do it, for about d each.
func MeasureCrypto(d time.Duration) (CryptoCosts, error) {
	var c CryptoCosts
	sa, err := keys.GenerateSigning(keys.NewKID("sig"))
	if err != nil {
		return c, err
	}
	sb, err := keys.GenerateSigning(keys.NewKID("sig"))
	if err != nil {
		return c, err
	}
	eb, err := keys.GenerateEncryption(keys.NewKID("enc"))
	if err != nil {
		return c, err
	}
	res := staticResolver{
		sig: map[string]jose.JSONWebKey{munich: sa.Public(), augsburg: sb.Public()},
		enc: map[string]jose.JSONWebKey{augsburg: eb.Public()},
	}
	// A write: the signed offering command of the write rows.
	cmds, err := signOfferings(sa, "crypto", 2)
	if err != nil {
		return c, err
	}
	pub := sa.Public()
	if c.VerifyCommand, err = timeEach(d, func() error {
		sc, err := registry.ParseCommand(cmds[0])
		if err != nil {
			return err
		}
		return sc.Verify(pub)
	}); err != nil {
		return c, fmt.Errorf("verify command: %w", err)
	}
	// A handover: the case of the handover row.
	now := time.Now()
	claims := func() envelope.Claims {
		return envelope.Claims{
			ID: envelope.NewID(), Issuer: munich, Audience: augsburg, IssuedAt: now, Expiry: now.Add(time.Hour),
			CaseID: envelope.NewID(), ServiceKey: leikaCase, Reason: "Umzug",
			Data: []byte(caseJSON(0)),
		}
	}
	ctx := context.Background()
	var token string
	if c.Seal, err = timeEach(d, func() (err error) {
		token, err = envelope.Seal(ctx, claims(), sa, eb.Public())
		return err
	}); err != nil {
		return c, fmt.Errorf("seal: %w", err)
	}
	var opened *envelope.Opened
	if c.Open, err = timeEach(d, func() (err error) {
		opened, err = envelope.Open(ctx, token, []jose.JSONWebKey{eb}, res, augsburg, now)
		return err
	}); err != nil {
		return c, fmt.Errorf("open: %w", err)
	}
	var receipt string
	if c.SignReceipt, err = timeEach(d, func() (err error) {
		receipt, err = envelope.SignReceipt(envelope.NewReceipt(opened, now), sb)
		return err
	}); err != nil {
		return c, fmt.Errorf("sign receipt: %w", err)
	}
	if c.VerifyReceipt, err = timeEach(d, func() error {
		_, err := envelope.VerifyReceipt(ctx, receipt, res, augsburg, opened.Digest, keys.Now(now))
		return err
	}); err != nil {
		return c, fmt.Errorf("verify receipt: %w", err)
	}
	return c, nil
}

// caseJSON is the case data of handover i (about 1 KiB).
func caseJSON(i int) string {
	return fmt.Sprintf(`{"applicant":"Erika Mustermann %d","subject":"Ummeldung","notes":%q}`, i, padding)
}
