package keys

import (
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	jose "github.com/go-jose/go-jose/v4"

	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
)

func TestSaveLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "signing.jwk")
	k, err := GenerateSigning(NewKID("sig"))
	if err != nil {
		t.Fatal(err)
	}
	if err := Save(path, k); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, want 0600", st.Mode().Perm())
	}
	// Atomic: nothing but the key is left in the directory (no temp files).
	ents, err := os.ReadDir(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 1 || ents[0].Name() != "signing.jwk" {
		t.Fatalf("directory holds %v, want only the key", ents)
	}
	got, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if got.KeyID != k.KeyID || got.IsPublic() || !got.Key.(ed25519.PrivateKey).Equal(k.Key) {
		t.Fatalf("loaded %+v, want %+v", got, k)
	}

	// Saving again replaces the file whole.
	k2, err := GenerateSigning(NewKID("sig"))
	if err != nil {
		t.Fatal(err)
	}
	if err := Save(path, k2); err != nil {
		t.Fatal(err)
	}
	if got, err := Load(path); err != nil || got.KeyID != k2.KeyID {
		t.Fatalf("after replace: %v %v", got.KeyID, err)
	}
}

func TestLoadRefuses(t *testing.T) {
	dir := t.TempDir()
	k, err := GenerateSigning("sig-1")
	if err != nil {
		t.Fatal(err)
	}
	open := filepath.Join(dir, "open.jwk")
	if err := Save(open, k); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(open); err == nil || !strings.Contains(err.Error(), "too open") {
		t.Fatalf("world-readable key: %v", err)
	}
	pub := filepath.Join(dir, "public.jwk")
	b, err := k.Public().MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pub, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(pub); err == nil || !strings.Contains(err.Error(), "not a private key") {
		t.Fatalf("public key as private: %v", err)
	}
	if _, err := Load(filepath.Join(dir, "missing.jwk")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
}

func TestLoadOrGenerate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "enc.jwk")
	k, created, err := LoadOrGenerate(path, GenerateEncryption, "enc")
	if err != nil || !created {
		t.Fatalf("first call: created %v, %v", created, err)
	}
	if !strings.HasPrefix(k.KeyID, "enc-") || k.Use != UseEnc || k.Algorithm != string(KeyEncryptionAlg) {
		t.Fatalf("generated %+v", k)
	}
	again, created, err := LoadOrGenerate(path, GenerateEncryption, "enc")
	if err != nil || created || again.KeyID != k.KeyID {
		t.Fatalf("second call: %s created %v, %v (want the saved %s)", again.KeyID, created, err, k.KeyID)
	}
	// A key that exists but cannot be loaded is an error, not replaced.
	if err := os.Chmod(path, 0o640); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadOrGenerate(path, GenerateEncryption, "enc"); err == nil {
		t.Fatal("unloadable key was replaced")
	}
}

func TestPublishedParsePublic(t *testing.T) {
	sig, err := GenerateSigning("s-1")
	if err != nil {
		t.Fatal(err)
	}
	enc, err := GenerateEncryption("e-1")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []jose.JSONWebKey{sig, enc} {
		pk, err := Published(k)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(pk.GetJwkJson(), `"d"`) {
			t.Fatalf("published key %s holds private material: %s", k.KeyID, pk.GetJwkJson())
		}
		if pk.GetStatus() != registryv1.KeyStatus_KEY_STATUS_ACTIVE || pk.GetKid() != k.KeyID || pk.GetUse() != k.Use {
			t.Fatalf("published %v", pk)
		}
		back, err := ParsePublic(pk)
		if err != nil {
			t.Fatalf("parse %s: %v", k.KeyID, err)
		}
		if !back.IsPublic() || back.KeyID != k.KeyID {
			t.Fatalf("parsed %+v", back)
		}
	}

	good, _ := Published(sig)
	privJSON, _ := sig.MarshalJSON()
	encPub, _ := Published(enc)
	other, _ := GenerateSigning("s-2")
	otherJSON, _ := other.Public().MarshalJSON()
	for _, tc := range []struct {
		name string
		mod  func(*registryv1.PublicKey)
		want string
	}{
		{"private material", func(p *registryv1.PublicKey) { p.JwkJson = string(privJSON) }, "private key material"},
		{"not JSON", func(p *registryv1.PublicKey) { p.JwkJson = "{" }, "invalid JWK"},
		{"kid mismatch", func(p *registryv1.PublicKey) { p.Kid = "s-9" }, "does not match"},
		{"wrong kid inside", func(p *registryv1.PublicKey) { p.JwkJson = string(otherJSON) }, "does not match"},
		{"signing alg", func(p *registryv1.PublicKey) { p.Alg = "ES256" }, "not allowed"},
		{"unknown use", func(p *registryv1.PublicKey) { p.Use = "wrap" }, "unknown use"},
		{"enc key declared sig", func(p *registryv1.PublicKey) {
			p.Kid, p.JwkJson, p.Alg = encPub.GetKid(), encPub.GetJwkJson(), string(SigningAlg)
		}, "must be Ed25519"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &registryv1.PublicKey{Kid: good.GetKid(), Use: good.GetUse(), Alg: good.GetAlg(), JwkJson: good.GetJwkJson()}
			tc.mod(p)
			_, err := ParsePublic(p)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error with %q", err, tc.want)
			}
		})
	}
	var m map[string]any
	if err := json.Unmarshal(privJSON, &m); err != nil || m["d"] == nil {
		t.Fatalf("test premise: the private JWK has a \"d\": %v", err)
	}
	if _, err := ParsePublic(&registryv1.PublicKey{Kid: "s-1", Use: UseSig, Alg: string(SigningAlg), JwkJson: string(privJSON)}); !errors.Is(err, ErrPrivateKey) {
		t.Fatalf("private JWK: %v, want ErrPrivateKey", err)
	}
}
