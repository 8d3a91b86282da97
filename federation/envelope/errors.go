package envelope

import "errors"

// Sentinel errors. Every error returned by this package wraps exactly one of
// them (test with errors.Is); the message adds context such as the kid or
// the claim that failed. Errors from a KeyResolver are passed through wrapped,
// so ErrUnknownKey, ErrRevokedKey, ErrKeyNotOwned and ErrKeyInactive surface
// unchanged when the resolver returns them.
var (
	// ErrMalformed: the token is not a well-formed compact JWE/JWS of the
	// expected shape (part count, base64, lengths, JSON syntax, duplicate
	// JSON keys, unknown claims).
	ErrMalformed = errors.New("envelope: malformed token")
	// ErrTooLarge: the token exceeds its size limit (checked before parsing).
	ErrTooLarge = errors.New("envelope: token too large")
	// ErrNesting: a JSON header or payload nests deeper than MaxJSONDepth.
	ErrNesting = errors.New("envelope: JSON nested too deeply")
	// ErrHeader: a header parameter is not on the allow-list (jwk, jku, x5u,
	// x5c, x5t, crit, ...) or typ/cty is not the expected one.
	ErrHeader = errors.New("envelope: header parameter not allowed")
	// ErrAlgorithm: alg or enc is not on the allow-list (EdDSA for
	// signatures; ECDH-ES+A256KW with A256GCM for encryption).
	ErrAlgorithm = errors.New("envelope: algorithm not allowed")
	// ErrCompressed: the JWE asks for compression ("zip"); refused before
	// anything is decrypted or decompressed.
	ErrCompressed = errors.New("envelope: compressed payloads are not allowed")
	// ErrInvalidKey: a key has the wrong type, curve or use, or the JWE
	// ephemeral key ("epk") is not a valid P-256 public point.
	ErrInvalidKey = errors.New("envelope: invalid key")
	// ErrUnknownKey: no key with this kid is known (resolver), or none of the
	// recipient's decryption keys has the kid named in the JWE header.
	ErrUnknownKey = errors.New("envelope: unknown key")
	// ErrRevokedKey: the signing key has been revoked; it is never valid.
	ErrRevokedKey = errors.New("envelope: key revoked")
	// ErrKeyNotOwned: the kid belongs to another organisation than the one
	// named as issuer.
	ErrKeyNotOwned = errors.New("envelope: key not owned by issuer")
	// ErrKeyInactive: the key exists but was not valid at the requested time
	// (not yet published, or retired and past its grace period).
	ErrKeyInactive = errors.New("envelope: key not valid at that time")
	// ErrSignature: the JWS signature does not verify.
	ErrSignature = errors.New("envelope: invalid signature")
	// ErrDecrypt: the JWE could not be decrypted (wrong key, tampered
	// ciphertext, tag, IV or encrypted key).
	ErrDecrypt = errors.New("envelope: decryption failed")
	// ErrAudience: the token is addressed to another organisation.
	ErrAudience = errors.New("envelope: wrong audience")
	// ErrExpired: exp has passed (beyond ClockSkew).
	ErrExpired = errors.New("envelope: token expired")
	// ErrNotYetValid: nbf or iat lies in the future (beyond ClockSkew).
	ErrNotYetValid = errors.New("envelope: token not yet valid")
	// ErrClaims: a claim is missing or invalid (jti, iss, case_id, LeiKa key,
	// attachment digest, event type, problem, receipt digest or status, ...).
	ErrClaims = errors.New("envelope: invalid claims")
)
