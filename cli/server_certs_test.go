package cli

import (
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/verbund/verbund/federation/peertls"
)

func fileMode(t *testing.T, path string) os.FileMode {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Mode().Perm()
}

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(data)
	if b == nil || b.Type != "CERTIFICATE" {
		t.Fatalf("%s: no PEM certificate", path)
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestCerts(t *testing.T) {
	dir := t.TempDir()
	caDir, out := filepath.Join(dir, "ca"), filepath.Join(dir, "nodes", "n1")

	code, stdout, stderr := cli(t, nil, "certs", "init-ca", "--dir", caDir, "--cn", "Test Network CA", "--validity", "1000h")
	if code != 0 {
		t.Fatalf("init-ca: exit %d, stderr %s", code, stderr)
	}
	contains(t, "init-ca output", stdout, []string{"ca.pem", "ca-key.pem", "offline"})
	if m := fileMode(t, filepath.Join(caDir, "ca-key.pem")); m != 0o600 {
		t.Errorf("ca-key.pem mode %04o, want 0600", m)
	}
	if m := fileMode(t, caDir); m != 0o700 {
		t.Errorf("CA dir mode %04o, want 0700", m)
	}
	ca := readCert(t, filepath.Join(caDir, "ca.pem"))
	if !ca.IsCA || ca.Subject.CommonName != "Test Network CA" {
		t.Errorf("CA cert: IsCA %v, CN %q", ca.IsCA, ca.Subject.CommonName)
	}

	// A second init-ca must not destroy the CA key.
	if code, _, stderr := cli(t, nil, "certs", "init-ca", "--dir", caDir); code != 1 || !strings.Contains(stderr, "already exists") {
		t.Errorf("second init-ca: exit %d, stderr %q", code, stderr)
	}

	code, stdout, stderr = cli(t, nil, "certs", "issue", "--ca-dir", caDir, "--node", "de-09162000",
		"--host", "127.0.0.1", "--host", "localhost,node1.example.org", "--out", out)
	if code != 0 {
		t.Fatalf("issue: exit %d, stderr %s", code, stderr)
	}
	contains(t, "issue output", stdout, []string{"de-09162000.pem", "de-09162000-key.pem", "127.0.0.1, localhost, node1.example.org"})
	certPath, keyPath := filepath.Join(out, "de-09162000.pem"), filepath.Join(out, "de-09162000-key.pem")
	if m := fileMode(t, keyPath); m != 0o600 {
		t.Errorf("node key mode %04o, want 0600", m)
	}
	if m := fileMode(t, certPath); m != 0o644 {
		t.Errorf("node cert mode %04o, want 0644", m)
	}
	c := readCert(t, certPath)
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	for _, u := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := c.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{u}, DNSName: "node1.example.org"}); err != nil {
			t.Errorf("node cert does not verify for %v: %v", u, err)
		}
	}
	if len(c.URIs) != 1 || c.URIs[0].String() != "verbund://node/de-09162000" {
		t.Errorf("URI SANs %v", c.URIs)
	}
	if err := c.VerifyHostname("127.0.0.1"); err != nil {
		t.Error(err)
	}
	b, err := peertls.Load(peertls.Files{CAFile: filepath.Join(caDir, "ca.pem"), CertFile: certPath, KeyFile: keyPath})
	if err != nil {
		t.Fatal(err)
	}
	if b.NodeID() != "de-09162000" {
		t.Errorf("NodeID %q", b.NodeID())
	}

	// Re-issuing needs --force, which replaces both files.
	args := []string{"certs", "issue", "--ca-dir", caDir, "--node", "de-09162000", "--host", "127.0.0.1", "--out", out}
	if code, _, stderr := cli(t, nil, args...); code != 1 || !strings.Contains(stderr, "already exists") {
		t.Errorf("re-issue without --force: exit %d, stderr %q", code, stderr)
	}
	if code, _, stderr := cli(t, nil, append(args, "--force")...); code != 0 {
		t.Fatalf("re-issue with --force: exit %d, stderr %q", code, stderr)
	}
	if c2 := readCert(t, certPath); c2.SerialNumber.Cmp(c.SerialNumber) == 0 {
		t.Error("--force did not replace the certificate")
	}
	if m := fileMode(t, keyPath); m != 0o600 {
		t.Errorf("re-issued key mode %04o, want 0600", m)
	}
	if _, err := peertls.Load(peertls.Files{CAFile: filepath.Join(caDir, "ca.pem"), CertFile: certPath, KeyFile: keyPath}); err != nil {
		t.Errorf("re-issued files: %v", err)
	}

	// A CA key readable by others is refused.
	if err := os.Chmod(filepath.Join(caDir, "ca-key.pem"), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := cli(t, nil, "certs", "issue", "--ca-dir", caDir, "--node", "n2", "--host", "127.0.0.1", "--out", out); code != 1 || !strings.Contains(stderr, "0644") {
		t.Errorf("issue with 0644 CA key: exit %d, stderr %q", code, stderr)
	}
}

func TestCertsUsageErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no subcommand", []string{"certs"}, "missing command"},
		{"unknown subcommand", []string{"certs", "frobnicate"}, "unknown command"},
		{"init-ca without dir", []string{"certs", "init-ca"}, "--dir is required"},
		{"init-ca bad validity", []string{"certs", "init-ca", "--dir", dir, "--validity", "-1h"}, "--validity"},
		{"issue without node", []string{"certs", "issue", "--ca-dir", dir, "--host", "127.0.0.1"}, "--node is required"},
		{"issue without host", []string{"certs", "issue", "--ca-dir", dir, "--node", "n1"}, "--host"},
		{"issue bad node id", []string{"certs", "issue", "--ca-dir", dir, "--node", "../x", "--host", "127.0.0.1"}, "node id"},
		{"gossip-key with argument", []string{"certs", "gossip-key", "x"}, "unexpected argument"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := cli(t, nil, tc.args...)
			if code != 2 || !strings.Contains(stderr, tc.want) {
				t.Errorf("exit %d, stderr %q; want 2 and %q", code, stderr, tc.want)
			}
		})
	}
	code, stdout, _ := cli(t, nil, "certs", "issue", "-h")
	if code != 0 {
		t.Errorf("issue -h: exit %d", code)
	}
	contains(t, "issue -h", stdout, []string{"--ca-dir", "--node", "--host", "--out", "--force"})
}

func TestCertsGossipKey(t *testing.T) {
	code, stdout, stderr := cli(t, nil, "certs", "gossip-key")
	if code != 0 {
		t.Fatalf("exit %d, stderr %s", code, stderr)
	}
	k, err := base64.StdEncoding.DecodeString(strings.TrimSpace(stdout))
	if err != nil || len(k) != 32 {
		t.Errorf("gossip-key printed %q: %d bytes, %v", stdout, len(k), err)
	}
	_, again, _ := cli(t, nil, "certs", "gossip-key")
	if again == stdout {
		t.Error("two gossip keys are equal")
	}
}
