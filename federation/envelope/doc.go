// Package envelope is the cryptographic layer of Verbund case handovers:
// signed and encrypted handover envelopes, signed delivery receipts, and
// signed and encrypted lifecycle events. It does no networking and no
// storage; keys of other organisations are found through a KeyResolver.
//
// # Envelope format
//
// A handover is a nested JWT-style token, signed and then encrypted:
//
//	JWE compact serialization (5 parts), protected header
//	  {"alg":"ECDH-ES+A256KW","enc":"A256GCM","kid":<recipient enc kid>,
//	   "typ":"verbund-handover+jwe","cty":"verbund-handover+jws","epk":{P-256 point}}
//	plaintext: JWS compact serialization (3 parts), protected header
//	  {"alg":"EdDSA","kid":<sender signing kid>,"typ":"verbund-handover+jws"}
//	payload: JSON claims (see Claims)
//
// Events use the same construction with typ "verbund-event+jwe" and
// "verbund-event+jws". Receipts are a plain JWS with typ
// "verbund-receipt+jws". Every layer names its type, so one kind of token is
// never accepted as another.
//
// # Algorithms
//
// Only these are accepted, anywhere: EdDSA (Ed25519) for signatures;
// ECDH-ES+A256KW on P-256 for key agreement and A256GCM for content
// encryption. Everything else (none, HS*, RS*, ES*, PS*, RSA-OAEP, dir,
// A*KW, PBES2, other enc values) is refused with ErrAlgorithm. Compression
// ("zip") is refused with ErrCompressed before decryption. Header parameters
// that carry or point to keys (jwk, jku, x5u, x5c, x5t, x5t#S256) and crit
// or b64 are refused with ErrHeader: verification keys come only from the
// KeyResolver, decryption keys only from the caller.
//
// # Claims
//
// Handover claims (JSON, in this order): jti, iss, aud, iat, nbf (optional),
// exp, case_id, tracking_code, leika (^99\d{12}$), reason, data (JSON
// object), attachments [{name, media_type, data (base64), sha256 (hex)}],
// previous [{jti, iss, aud, envelope_sha256, at}]. Times are NumericDate
// seconds. Unknown claims and duplicate keys (compared case-insensitively,
// as encoding/json matches fields) are refused.
//
// Receipt claims: iss (receiver), aud (sender), handover_jti,
// envelope_sha256 (hex SHA-256 of the exact compact JWE), received_at,
// status "delivered". Receipts are deterministic: the same receipt signed
// with the same key gives byte-identical tokens.
//
// Event claims: jti, iss, aud, iat, exp, event (accept, reject, complete,
// forward), handover_jti, case_id, envelope_sha256, problem (RFC 7807
// {type, title, detail}, for reject only), forwarded_to (for forward only).
//
// # Verification order
//
// Open and OpenEvent check cheapest first and stop at the first failure:
//
//  1. size (MaxEnvelopeSize / MaxEventSize) before any parsing;
//  2. structure: exactly 5 parts;
//  3. outer header: size, JSON depth (MaxJSONDepth) and duplicate keys,
//     parameter allow-list, no zip, alg/enc allow-list, typ/cty, kid, epk a
//     valid P-256 point; then the fixed lengths of encrypted key, IV and tag;
//  4. decryption key chosen by kid among the caller's keys; decrypt
//     (go-jose ParseEncryptedCompact with explicit allow-lists, AES-GCM);
//  5. inner JWS: 3 parts, header checks as above, alg allow-list (go-jose
//     ParseSignedCompact with [EdDSA]);
//  6. key lookup: resolver.VerificationKey(iss, kid, keys.Now(now)) (the
//     current registry moment: see the key rule in package keys), with iss read
//     from the not yet verified payload (after the JSON depth check), so a
//     kid of another organisation fails with ErrKeyNotOwned;
//  7. signature verification with that key only;
//  8. claims: strict decoding, iss equals the key owner, form (Validate),
//     audience, then time (iat and nbf not after now+ClockSkew, exp not
//     before now-ClockSkew).
//
// VerifyReceipt follows steps 5–8 with the signing key looked up as valid
// at the registry moment the caller names (never at the receipt's own
// received_at, which the signer chose): the current moment for a receipt as
// it arrives, the moment the holder recorded it when verifying it again, so
// receipts verify offline long after the receiver rotated its key, was
// suspended or had the key revoked. It then checks the expected issuer and
// digest. VerifyEvent does the same for the inner JWS of an event, with no
// lifetime check.
//
// Replay protection is not done here: the inbox dedupes Claims.ID; Open
// also returns the envelope Digest.
package envelope
