package auth

import (
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/verbund/verbund/keys"
	nodev1 "github.com/verbund/verbund/proto/gen/verbund/node/v1"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
	"github.com/verbund/verbund/registry"
)

func openStore(t *testing.T) (*Store, string) {
	t.Helper()
	dir := t.TempDir()
	s, err := Open(Dir(dir), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, dir
}

// TestUsers: create, authenticate, disable, reset, certificates, the
// initial admin; refusals are the sentinels callers tell apart.
func TestUsers(t *testing.T) {
	s, dir := openStore(t)
	path, err := EnsureInitialAdmin(s, dir)
	if err != nil || path != filepath.Join(dir, InitialAdminFile) {
		t.Fatalf("initial admin: %q %v", path, err)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("initial admin password file: %v %v", st, err)
	}
	pw, _ := os.ReadFile(path)
	if u, err := s.Authenticate("admin", strings.TrimSpace(string(pw))); err != nil || !HasRole(u, nodev1.Role_ROLE_ADMIN) {
		t.Fatalf("initial admin signs in: %v %v", u, err)
	}
	if again, err := EnsureInitialAdmin(s, dir); again != "" || err != nil {
		t.Fatalf("a second initial admin: %q %v", again, err)
	}

	fp := strings.Repeat("ab", 32)
	u, gen, err := s.Create(&nodev1.User{Username: "erika", Roles: []nodev1.Role{nodev1.Role_ROLE_CLERK, nodev1.Role_ROLE_CLERK}, CertificateSha256: []string{strings.ToUpper(fp)}}, "")
	if err != nil || len(gen) < 20 || len(u.GetRoles()) != 1 || u.GetDisplayName() != "erika" {
		t.Fatalf("create: %v %q %v", u, gen, err)
	}
	for _, bad := range []*nodev1.User{{Username: "Erika"}, {Username: "x"}, {Username: "ok-name", Roles: []nodev1.Role{99}}} {
		if _, _, err := s.Create(bad, "long enough password"); !errors.Is(err, ErrInvalid) {
			t.Fatalf("create %v: %v, want ErrInvalid", bad, err)
		}
	}
	if _, _, err := s.Create(&nodev1.User{Username: "erika"}, "long enough password"); !errors.Is(err, ErrExists) {
		t.Fatalf("duplicate: %v", err)
	}
	if _, _, err := s.Create(&nodev1.User{Username: "max"}, "short"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("short password: %v", err)
	}
	if _, _, err := s.Create(&nodev1.User{Username: "max", CertificateSha256: []string{fp}}, "long enough password"); !errors.Is(err, ErrExists) {
		t.Fatalf("someone else's certificate: %v", err)
	}
	if _, err := s.Authenticate("erika", gen); err != nil {
		t.Fatal(err)
	}
	_, errWrong := s.Authenticate("erika", gen+"x")
	_, errUnknown := s.Authenticate("nobody", gen)
	if !errors.Is(errWrong, ErrBadCredential) || !errors.Is(errUnknown, ErrBadCredential) {
		t.Fatalf("wrong password %v, unknown user %v", errWrong, errUnknown)
	}
	if u, err := s.ByCertificate(fp); err != nil || u.GetUsername() != "erika" {
		t.Fatalf("by certificate: %v %v", u, err)
	}
	if _, err := s.Update(&nodev1.UpdateUserRequest{Username: "erika", SetDisabled: true, Disabled: true, RemoveCertificateSha256: []string{fp}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Authenticate("erika", gen); !errors.Is(err, ErrDisabled) {
		t.Fatalf("disabled: %v", err)
	}
	if _, err := s.ByCertificate(fp); !errors.Is(err, ErrNotFound) {
		t.Fatalf("removed certificate: %v", err)
	}
	if _, err := s.SetPassword("erika", "a brand new password"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Update(&nodev1.UpdateUserRequest{Username: "erika", SetDisabled: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Authenticate("erika", "a brand new password"); err != nil {
		t.Fatalf("after reset and enable: %v", err)
	}
	if _, err := s.Authenticate("erika", gen); !errors.Is(err, ErrBadCredential) {
		t.Fatalf("old password after reset: %v", err)
	}
	users, err := s.List()
	if err != nil || len(users) != 2 || users[0].GetUsername() != "admin" {
		t.Fatalf("list: %v %v", users, err)
	}
}

// TestTokens: a token verifies against the key the resolver gives for its
// issuer and kid, and is refused when expired, issued in the future,
// signed by another key, with another alg or typ (a signed registry
// command is no token), with extra header parameters, or for another
// audience.
func TestTokens(t *testing.T) {
	key, err := keys.GenerateSigning("org-a-sig-1")
	if err != nil {
		t.Fatal(err)
	}
	resolve := func(org, kid string) (jose.JSONWebKey, error) {
		if org != "org-a" || kid != key.KeyID {
			return jose.JSONWebKey{}, errors.New("unknown key")
		}
		return key.Public(), nil
	}
	now := time.Unix(1_800_000_000, 0)
	u := &nodev1.User{Username: "erika", Roles: []nodev1.Role{nodev1.Role_ROLE_CLERK}}
	tok, exp, err := IssueToken(key, "org-a", "n1", u, now, 0)
	if err != nil || !exp.Equal(now.Add(DefaultTokenTTL)) {
		t.Fatalf("issue: %v %v", exp, err)
	}
	c, err := VerifyToken(tok, resolve, now.Add(time.Minute), DefaultSkew)
	if err != nil || c.Subject != "erika" || c.Node != "n1" || c.Roles[0] != "CLERK" {
		t.Fatalf("verify: %+v %v", c, err)
	}
	other, _ := keys.GenerateSigning(key.KeyID)
	forged, _, _ := IssueToken(other, "org-a", "n1", u, now, 0)
	unknownOrg, _, _ := IssueToken(key, "org-b", "n1", u, now, 0)
	cmd, err := registry.SignCommand(registry.NewCommand("org-a", &registryv1.Mutation{Op: &registryv1.Mutation_DeleteOffering{DeleteOffering: "org-a-offering-1"}}), key)
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(tok, ".")
	withHeader := func(h string) string {
		return base64.RawURLEncoding.EncodeToString([]byte(h)) + "." + parts[1] + "." + parts[2]
	}
	for name, tc := range map[string]struct {
		tok string
		at  time.Time
	}{
		"expired":              {tok, now.Add(DefaultTokenTTL + DefaultSkew + time.Second)},
		"issued in the future": {tok, now.Add(-DefaultSkew - time.Second)},
		"forged":               {forged, now},
		"unknown issuer":       {unknownOrg, now},
		"a registry command":   {cmd, now},
		"alg none":             {withHeader(`{"alg":"none","kid":"org-a-sig-1","typ":"verbund-user+jwt"}`), now},
		"alg HS256":            {withHeader(`{"alg":"HS256","kid":"org-a-sig-1","typ":"verbund-user+jwt"}`), now},
		"embedded key":         {withHeader(`{"alg":"EdDSA","kid":"org-a-sig-1","typ":"verbund-user+jwt","jwk":{}}`), now},
		"garbage":              {"a.b.c", now},
		"too many parts":       {tok + ".x", now},
	} {
		if _, err := VerifyToken(tc.tok, resolve, tc.at, DefaultSkew); !errors.Is(err, ErrInvalidToken) {
			t.Errorf("%s: %v, want ErrInvalidToken", name, err)
		}
	}
}
