package envelope

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// Claims is the signed content of a handover.
type Claims struct {
	ID           string    // "jti": unique id of this handover (the inbox dedupes it)
	Issuer       string    // "iss": sending organisation
	Audience     string    // "aud": receiving organisation
	IssuedAt     time.Time // "iat" (seconds)
	NotBefore    time.Time // "nbf" (seconds, optional)
	Expiry       time.Time // "exp" (seconds)
	CaseID       string    // "case_id": the sender's case id
	TrackingCode string    // "tracking_code": shown to the citizen (optional)
	ServiceKey   string    // "leika": LeiKa service key, ^99\d{12}$
	Reason       string    // "reason": why the case is handed over (optional)
	// Data is the structured case data, a JSON object (optional).
	Data json.RawMessage
	// Attachments are documents of the case, carried inline.
	Attachments []Attachment
	// Previous lists earlier handovers of this case, oldest first (for a
	// forwarded case, the last entry is the handover it was forwarded from).
	Previous []Hop
}

// Attachment is a document carried inline in a handover.
type Attachment struct {
	Name      string `json:"name"`
	MediaType string `json:"media_type"`
	Data      []byte `json:"data"`   // standard base64 in JSON
	SHA256    string `json:"sha256"` // lower-case hex SHA-256 of Data
}

// NewAttachment returns an attachment with its digest filled in.
func NewAttachment(name, mediaType string, data []byte) Attachment {
	sum := sha256.Sum256(data)
	return Attachment{Name: name, MediaType: mediaType, Data: data, SHA256: hex.EncodeToString(sum[:])}
}

// Hop records one earlier handover of the case.
type Hop struct {
	HandoverID string    // "jti" of that handover
	From       string    // "iss"
	To         string    // "aud"
	Digest     string    // "envelope_sha256": hex SHA-256 of its envelope (optional)
	At         time.Time // "at" (seconds)
}

// NewID returns a random identifier for jti (UUID version 4 text form).
func NewID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// Limits on claim values.
const (
	maxIDLen          = 128
	maxNameLen        = 256
	maxTextLen        = 4096
	maxHops           = 64
	maxAttachments    = 256
	maxAttachmentName = 255
)

type wireHop struct {
	HandoverID string `json:"jti"`
	From       string `json:"iss"`
	To         string `json:"aud"`
	Digest     string `json:"envelope_sha256,omitempty"`
	At         int64  `json:"at"`
}

// wireClaims is the JSON form of Claims; field order is the encoding order.
type wireClaims struct {
	ID           string          `json:"jti"`
	Issuer       string          `json:"iss"`
	Audience     string          `json:"aud"`
	IssuedAt     int64           `json:"iat"`
	NotBefore    int64           `json:"nbf,omitempty"`
	Expiry       int64           `json:"exp"`
	CaseID       string          `json:"case_id"`
	TrackingCode string          `json:"tracking_code,omitempty"`
	ServiceKey   string          `json:"leika"`
	Reason       string          `json:"reason,omitempty"`
	Data         json.RawMessage `json:"data,omitempty"`
	Attachments  []Attachment    `json:"attachments,omitempty"`
	Previous     []wireHop       `json:"previous,omitempty"`
}

func unix(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.Unix()
}

func fromUnix(s int64) time.Time {
	if s == 0 {
		return time.Time{}
	}
	return time.Unix(s, 0).UTC()
}

func (c *Claims) wire() wireClaims {
	w := wireClaims{
		ID: c.ID, Issuer: c.Issuer, Audience: c.Audience,
		IssuedAt: unix(c.IssuedAt), NotBefore: unix(c.NotBefore), Expiry: unix(c.Expiry),
		CaseID: c.CaseID, TrackingCode: c.TrackingCode, ServiceKey: c.ServiceKey, Reason: c.Reason,
		Data: c.Data, Attachments: c.Attachments,
	}
	for _, h := range c.Previous {
		w.Previous = append(w.Previous, wireHop{h.HandoverID, h.From, h.To, h.Digest, unix(h.At)})
	}
	return w
}

func (w *wireClaims) claims() Claims {
	c := Claims{
		ID: w.ID, Issuer: w.Issuer, Audience: w.Audience,
		IssuedAt: fromUnix(w.IssuedAt), NotBefore: fromUnix(w.NotBefore), Expiry: fromUnix(w.Expiry),
		CaseID: w.CaseID, TrackingCode: w.TrackingCode, ServiceKey: w.ServiceKey, Reason: w.Reason,
		Data: w.Data, Attachments: w.Attachments,
	}
	for _, h := range w.Previous {
		c.Previous = append(c.Previous, Hop{h.HandoverID, h.From, h.To, h.Digest, fromUnix(h.At)})
	}
	return c
}

// Validate checks the claims for completeness and form (not time or
// audience). Seal refuses, and Open rejects, claims that fail it.
func (c *Claims) Validate() error {
	if err := checkText("jti", c.ID, maxIDLen, true); err != nil {
		return err
	}
	if err := checkText("iss", c.Issuer, maxNameLen, true); err != nil {
		return err
	}
	if err := checkText("aud", c.Audience, maxNameLen, true); err != nil {
		return err
	}
	if err := checkLifetime(c.IssuedAt, c.NotBefore, c.Expiry); err != nil {
		return err
	}
	if err := checkText("case_id", c.CaseID, maxNameLen, true); err != nil {
		return err
	}
	if err := checkText("tracking_code", c.TrackingCode, maxNameLen, false); err != nil {
		return err
	}
	if !ValidServiceKey(c.ServiceKey) {
		return fmt.Errorf("%w: leika %q does not match ^99\\d{12}$", ErrClaims, c.ServiceKey)
	}
	if len(c.Reason) > maxTextLen {
		return fmt.Errorf("%w: reason longer than %d bytes", ErrClaims, maxTextLen)
	}
	if len(c.Data) > 0 {
		d := bytes.TrimLeft(c.Data, " \t\r\n")
		if len(d) == 0 || d[0] != '{' || !json.Valid(c.Data) {
			return fmt.Errorf("%w: data must be a JSON object", ErrClaims)
		}
	}
	if len(c.Attachments) > maxAttachments {
		return fmt.Errorf("%w: more than %d attachments", ErrClaims, maxAttachments)
	}
	for i, a := range c.Attachments {
		if err := a.validate(); err != nil {
			return fmt.Errorf("attachment %d: %w", i, err)
		}
	}
	if len(c.Previous) > maxHops {
		return fmt.Errorf("%w: more than %d previous handovers", ErrClaims, maxHops)
	}
	for i, h := range c.Previous {
		if h.HandoverID == "" || h.From == "" || h.To == "" || h.At.IsZero() {
			return fmt.Errorf("%w: previous[%d] needs jti, iss, aud and at", ErrClaims, i)
		}
		if h.Digest != "" && !isHexDigest(h.Digest) {
			return fmt.Errorf("%w: previous[%d] envelope_sha256 is not hex SHA-256", ErrClaims, i)
		}
	}
	return nil
}

func (a *Attachment) validate() error {
	if a.Name == "" || len(a.Name) > maxAttachmentName || a.Name == "." || a.Name == ".." ||
		strings.ContainsAny(a.Name, "/\\\x00") {
		return fmt.Errorf("%w: attachment name %q not allowed", ErrClaims, a.Name)
	}
	if a.MediaType == "" || len(a.MediaType) > maxNameLen {
		return fmt.Errorf("%w: attachment %q has no media_type", ErrClaims, a.Name)
	}
	sum := sha256.Sum256(a.Data)
	if a.SHA256 != hex.EncodeToString(sum[:]) {
		return fmt.Errorf("%w: attachment %q: sha256 does not match its data", ErrClaims, a.Name)
	}
	return nil
}

// ValidServiceKey reports whether s is a LeiKa service key: "99" followed
// by 12 digits.
func ValidServiceKey(s string) bool {
	if len(s) != 14 || s[0] != '9' || s[1] != '9' {
		return false
	}
	for i := 2; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func checkText(name, v string, max int, required bool) error {
	if v == "" {
		if required {
			return fmt.Errorf("%w: %s missing", ErrClaims, name)
		}
		return nil
	}
	if len(v) > max {
		return fmt.Errorf("%w: %s longer than %d bytes", ErrClaims, name, max)
	}
	for _, r := range v {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("%w: %s contains control characters", ErrClaims, name)
		}
	}
	return nil
}

func checkLifetime(iat, nbf, exp time.Time) error {
	if iat.IsZero() || exp.IsZero() {
		return fmt.Errorf("%w: iat and exp are required", ErrClaims)
	}
	if !exp.After(iat) {
		return fmt.Errorf("%w: exp must be after iat", ErrClaims)
	}
	if !nbf.IsZero() && nbf.After(exp) {
		return fmt.Errorf("%w: nbf after exp", ErrClaims)
	}
	return nil
}

// checkTime checks iat, nbf and exp against now with ClockSkew leeway.
func checkTime(iat, nbf, exp, now time.Time) error {
	late := now.Add(ClockSkew)
	if iat.After(late) {
		return fmt.Errorf("%w: iat %s is after %s", ErrNotYetValid, iat.Format(time.RFC3339), now.Format(time.RFC3339))
	}
	if !nbf.IsZero() && nbf.After(late) {
		return fmt.Errorf("%w: nbf %s is after %s", ErrNotYetValid, nbf.Format(time.RFC3339), now.Format(time.RFC3339))
	}
	if !now.Before(exp.Add(ClockSkew)) {
		return fmt.Errorf("%w: exp %s is before %s", ErrExpired, exp.Format(time.RFC3339), now.Format(time.RFC3339))
	}
	return nil
}

func isHexDigest(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
