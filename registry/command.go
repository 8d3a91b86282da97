package registry

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"google.golang.org/protobuf/proto"

	"github.com/verbund/verbund/keys"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
)

// CommandType is the JWS "typ" of a signed registry command.
const CommandType = "verbund-command+jws"

var commandAlgs = []jose.SignatureAlgorithm{keys.SigningAlg}

// NewCommandID returns a random command id (22 base64url characters).
func NewCommandID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// NewCommand builds a command for issuer with a fresh id and the current time.
func NewCommand(issuer string, muts ...*registryv1.Mutation) *registryv1.Command {
	return &registryv1.Command{
		Issuer:         issuer,
		Id:             NewCommandID(),
		IssuedAtUnixMs: time.Now().UnixMilli(),
		Mutations:      muts,
	}
}

// SignCommand validates cmd and signs it with the issuer's private signing
// key, returning the JWS compact serialisation that PublishService accepts.
func SignCommand(cmd *registryv1.Command, key jose.JSONWebKey) (string, error) {
	if err := ValidateCommand(cmd); err != nil {
		return "", err
	}
	if key.KeyID == "" {
		return "", invalid("signing key has no kid")
	}
	payload, err := proto.MarshalOptions{Deterministic: true}.Marshal(cmd)
	if err != nil {
		return "", fmt.Errorf("encode command: %w", err)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: keys.SigningAlg, Key: key},
		(&jose.SignerOptions{}).WithType(CommandType))
	if err != nil {
		return "", fmt.Errorf("signer: %w", err)
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		return "", fmt.Errorf("sign command: %w", err)
	}
	return jws.CompactSerialize()
}

// SignedCommand is a parsed, structurally valid, not yet verified command.
type SignedCommand struct {
	Raw     string
	KID     string
	Command *registryv1.Command
	// Digest is the SHA-256 of Raw: the identity of this exact signed command.
	Digest [32]byte

	jws *jose.JSONWebSignature
}

// ParseCommand parses a JWS compact serialisation of a command and checks
// its structure. The signature is not verified: that needs the issuer's key
// (see Verify). Only EdDSA is accepted; embedded keys (jwk, jku, x5c, x5u)
// are refused outright so nothing can ever verify against them.
func ParseCommand(raw string) (*SignedCommand, error) {
	if len(raw) > MaxSignedCommandBytes {
		return nil, fmt.Errorf("%w: signed command is %d bytes, at most %d", ErrTooLarge, len(raw), MaxSignedCommandBytes)
	}
	if strings.Count(raw, ".") != 2 {
		return nil, fmt.Errorf("%w: not a JWS compact serialisation", ErrInvalidSignature)
	}
	if err := checkHeaderParams(raw[:strings.IndexByte(raw, '.')]); err != nil {
		return nil, err
	}
	jws, err := jose.ParseSigned(raw, commandAlgs)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidSignature, err)
	}
	if len(jws.Signatures) != 1 {
		return nil, fmt.Errorf("%w: want exactly one signature", ErrInvalidSignature)
	}
	h := jws.Signatures[0].Protected
	if h.KeyID == "" {
		return nil, fmt.Errorf("%w: header has no kid", ErrInvalidSignature)
	}
	if typ, _ := h.ExtraHeaders[jose.HeaderType].(string); typ != CommandType {
		return nil, fmt.Errorf("%w: typ %q, want %q", ErrInvalidSignature, typ, CommandType)
	}
	cmd := &registryv1.Command{}
	if err := proto.Unmarshal(jws.UnsafePayloadWithoutVerification(), cmd); err != nil {
		return nil, fmt.Errorf("%w: payload is not a command: %v", ErrInvalidArgument, err)
	}
	if err := ValidateCommand(cmd); err != nil {
		return nil, err
	}
	return &SignedCommand{Raw: raw, KID: h.KeyID, Command: cmd, Digest: sha256.Sum256([]byte(raw)), jws: jws}, nil
}

// Verify checks the signature against pub, the issuer's registered key.
func (s *SignedCommand) Verify(pub jose.JSONWebKey) error {
	if pub.KeyID != s.KID {
		return fmt.Errorf("%w: key %q does not match kid %q", ErrInvalidSignature, pub.KeyID, s.KID)
	}
	if _, err := s.jws.Verify(pub); err != nil {
		return fmt.Errorf("%w: command %s by %s: %v", ErrInvalidSignature, s.Command.GetId(), s.Command.GetIssuer(), err)
	}
	return nil
}

// checkHeaderParams allows exactly the protected header parameters a command
// uses (alg, kid, typ). Everything else, in particular embedded or remote
// keys (jwk, jku, x5c, x5u) and crit, is refused before any other parsing.
func checkHeaderParams(b64 string) error {
	if len(b64) > 1024 {
		return fmt.Errorf("%w: protected header too large", ErrInvalidSignature)
	}
	raw, err := base64.RawURLEncoding.DecodeString(b64)
	if err != nil {
		return fmt.Errorf("%w: protected header is not base64url", ErrInvalidSignature)
	}
	var h map[string]json.RawMessage
	if err := json.Unmarshal(raw, &h); err != nil {
		return fmt.Errorf("%w: protected header is not a JSON object", ErrInvalidSignature)
	}
	for k := range h {
		switch k {
		case "alg", "kid", "typ":
		default:
			return fmt.Errorf("%w: header parameter %q is not accepted", ErrInvalidSignature, k)
		}
	}
	return nil
}
