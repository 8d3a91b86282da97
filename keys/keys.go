package keys

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	jose "github.com/go-jose/go-jose/v4"

	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
)

// Algorithms used by Verbund. They are the only ones accepted anywhere.
const (
	SigningAlg        = jose.EdDSA
	KeyEncryptionAlg  = jose.ECDH_ES_A256KW
	ContentEncryption = jose.A256GCM

	UseSig = "sig"
	UseEnc = "enc"
	// UseRec marks an offline recovery key: an Ed25519 key that signs
	// nothing but a KeyRecovery of its own organisation (the network
	// operator's, set at bootstrap and kept offline).
	UseRec = "rec"
)

// ErrPrivateKey is returned when a key that must be public has private parts.
var ErrPrivateKey = errors.New("keys: JWK contains private key material")

// NewKID returns a random key id with the given prefix ("<prefix>-<16 hex>").
func NewKID(prefix string) string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s-%x", prefix, b)
}

// GenerateSigning creates an Ed25519 signing key.
func GenerateSigning(kid string) (jose.JSONWebKey, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return jose.JSONWebKey{}, fmt.Errorf("generate signing key: %w", err)
	}
	return jose.JSONWebKey{Key: priv, KeyID: kid, Algorithm: string(SigningAlg), Use: UseSig}, nil
}

// GenerateRecovery creates an Ed25519 recovery key (use "rec").
func GenerateRecovery(kid string) (jose.JSONWebKey, error) {
	k, err := GenerateSigning(kid)
	k.Use = UseRec
	return k, err
}

// GenerateEncryption creates a P-256 key for ECDH-ES key agreement.
func GenerateEncryption(kid string) (jose.JSONWebKey, error) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return jose.JSONWebKey{}, fmt.Errorf("generate encryption key: %w", err)
	}
	return jose.JSONWebKey{Key: priv, KeyID: kid, Algorithm: string(KeyEncryptionAlg), Use: UseEnc}, nil
}

// SigningFromSeed derives an Ed25519 signing key from a 32-byte seed
// (deterministic keys for tests and sample data only).
func SigningFromSeed(kid string, seed []byte) jose.JSONWebKey {
	priv := ed25519.NewKeyFromSeed(seed)
	return jose.JSONWebKey{Key: priv, KeyID: kid, Algorithm: string(SigningAlg), Use: UseSig}
}

// Save writes a private JWK to path with mode 0600, atomically.
func Save(path string, k jose.JSONWebKey) error {
	b, err := k.MarshalJSON()
	if err != nil {
		return fmt.Errorf("marshal key %s: %w", k.KeyID, err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("create key dir: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".key-*")
	if err != nil {
		return fmt.Errorf("create key file: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("chmod key file: %w", err)
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("write key file: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("sync key file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("close key file: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("install key file: %w", err)
	}
	return nil
}

// Load reads a JWK written by Save. It refuses files readable by others.
func Load(path string) (jose.JSONWebKey, error) {
	var k jose.JSONWebKey
	st, err := os.Stat(path)
	if err != nil {
		return k, fmt.Errorf("load key: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return k, fmt.Errorf("load key %s: permissions %v are too open (want 0600)", path, st.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return k, fmt.Errorf("load key: %w", err)
	}
	if err := k.UnmarshalJSON(b); err != nil {
		return k, fmt.Errorf("load key %s: %w", path, err)
	}
	if k.IsPublic() {
		return k, fmt.Errorf("load key %s: not a private key", path)
	}
	return k, nil
}

// LoadOrGenerate loads the key at path, or generates and saves a new one.
func LoadOrGenerate(path string, gen func(kid string) (jose.JSONWebKey, error), kidPrefix string) (jose.JSONWebKey, bool, error) {
	k, err := Load(path)
	if err == nil {
		return k, false, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return k, false, err
	}
	k, err = gen(NewKID(kidPrefix))
	if err != nil {
		return k, false, err
	}
	if err := Save(path, k); err != nil {
		return k, false, err
	}
	return k, true, nil
}

// Published returns the registry form of k's public half.
func Published(k jose.JSONWebKey) (*registryv1.PublicKey, error) {
	pub := k.Public()
	if !pub.Valid() {
		return nil, fmt.Errorf("key %s: no valid public key", k.KeyID)
	}
	b, err := pub.MarshalJSON()
	if err != nil {
		return nil, fmt.Errorf("marshal public key %s: %w", k.KeyID, err)
	}
	return &registryv1.PublicKey{
		Kid:     k.KeyID,
		Use:     k.Use,
		Alg:     k.Algorithm,
		JwkJson: string(b),
		Status:  registryv1.KeyStatus_KEY_STATUS_ACTIVE,
	}, nil
}

// ParsePublic parses a published JWK and checks that it is public, matches
// the declared kid, use and algorithm, and is of the type the algorithm needs.
func ParsePublic(pk *registryv1.PublicKey) (jose.JSONWebKey, error) {
	var k jose.JSONWebKey
	if err := json.Unmarshal([]byte(pk.GetJwkJson()), &k); err != nil {
		return k, fmt.Errorf("key %q: invalid JWK: %w", pk.GetKid(), err)
	}
	if !k.IsPublic() {
		return k, fmt.Errorf("key %q: %w", pk.GetKid(), ErrPrivateKey)
	}
	if k.KeyID != pk.GetKid() {
		return k, fmt.Errorf("key %q: JWK kid %q does not match", pk.GetKid(), k.KeyID)
	}
	switch pk.GetUse() {
	case UseSig, UseRec:
		if pk.GetAlg() != string(SigningAlg) {
			return k, fmt.Errorf("key %q: signing algorithm %q not allowed (want %s)", pk.GetKid(), pk.GetAlg(), SigningAlg)
		}
		if _, ok := k.Key.(ed25519.PublicKey); !ok {
			return k, fmt.Errorf("key %q: signing key must be Ed25519, got %T", pk.GetKid(), k.Key)
		}
	case UseEnc:
		if pk.GetAlg() != string(KeyEncryptionAlg) {
			return k, fmt.Errorf("key %q: encryption algorithm %q not allowed (want %s)", pk.GetKid(), pk.GetAlg(), KeyEncryptionAlg)
		}
		ec, ok := k.Key.(*ecdsa.PublicKey)
		if !ok || ec.Curve != elliptic.P256() {
			return k, fmt.Errorf("key %q: encryption key must be P-256, got %T", pk.GetKid(), k.Key)
		}
	default:
		return k, fmt.Errorf("key %q: unknown use %q", pk.GetKid(), pk.GetUse())
	}
	return k, nil
}
