package peertls

import (
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

func parseOne(t *testing.T, data []byte) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode(data)
	if b == nil {
		t.Fatal("no PEM block")
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestIssueNodeCert(t *testing.T) {
	p := newPKI(t, "Test CA")
	ca := parseOne(t, p.cert)
	if !ca.IsCA || ca.Subject.CommonName != "Test CA" || ca.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Errorf("CA: IsCA=%v CN=%q usage=%v", ca.IsCA, ca.Subject.CommonName, ca.KeyUsage)
	}
	certPEM, _, err := IssueNodeCert(p.cert, p.key, "de-09162000", []string{"127.0.0.1", "Node1.Example.org.", "::1", "localhost"}, 10000*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c := parseOne(t, certPEM)
	if c.Subject.CommonName != "de-09162000" {
		t.Errorf("CN = %q", c.Subject.CommonName)
	}
	if len(c.URIs) != 1 || c.URIs[0].String() != "verbund://node/de-09162000" {
		t.Errorf("URIs = %v", c.URIs)
	}
	if !slices.Equal(c.DNSNames, []string{"node1.example.org", "localhost"}) {
		t.Errorf("DNSNames = %v", c.DNSNames)
	}
	if len(c.IPAddresses) != 2 || !c.IPAddresses[0].Equal(net.ParseIP("127.0.0.1")) || !c.IPAddresses[1].Equal(net.IPv6loopback) {
		t.Errorf("IPAddresses = %v", c.IPAddresses)
	}
	if !slices.Equal(c.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}) || c.IsCA {
		t.Errorf("ExtKeyUsage = %v, IsCA = %v", c.ExtKeyUsage, c.IsCA)
	}
	if !c.NotAfter.Equal(ca.NotAfter) {
		t.Errorf("NotAfter %v, want capped at the CA's %v", c.NotAfter, ca.NotAfter)
	}
	if err := c.CheckSignatureFrom(ca); err != nil {
		t.Error(err)
	}

	other := newPKI(t, "Other CA")
	for _, tc := range []struct {
		name           string
		caCert, caKey  []byte
		id             string
		hosts          []string
		validity       time.Duration
		wantErrContain string
	}{
		{"empty node id", p.cert, p.key, "", testHosts, time.Hour, "node id"},
		{"node id with slash", p.cert, p.key, "a/b", testHosts, time.Hour, "node id"},
		{"node id starting with dot", p.cert, p.key, ".n1", testHosts, time.Hour, "node id"},
		{"node id too long", p.cert, p.key, strings.Repeat("a", 65), testHosts, time.Hour, "node id"},
		{"no hosts", p.cert, p.key, "n1", nil, time.Hour, "host"},
		{"bad host", p.cert, p.key, "n1", []string{"a b"}, time.Hour, "host"},
		{"host with port", p.cert, p.key, "n1", []string{"127.0.0.1:80"}, time.Hour, "host"},
		{"zero validity", p.cert, p.key, "n1", testHosts, 0, "validity"},
		{"key of another CA", p.cert, other.key, "n1", testHosts, time.Hour, "does not belong"},
		{"node cert as CA", p.mustIssue(t, "n0"), p.key, "n1", testHosts, time.Hour, "not a CA"},
		{"garbage CA", []byte("nope"), p.key, "n1", testHosts, time.Hour, "no PEM certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := IssueNodeCert(tc.caCert, tc.caKey, tc.id, tc.hosts, tc.validity)
			if err == nil || !strings.Contains(err.Error(), tc.wantErrContain) {
				t.Errorf("err = %v, want one containing %q", err, tc.wantErrContain)
			}
		})
	}
}

func (p *testPKI) mustIssue(t *testing.T, id string) []byte {
	c, _ := p.issue(t, id)
	return c
}

func TestLoad(t *testing.T) {
	p := newPKI(t, "Test CA")
	f := p.writeFiles(t, "n1")
	b, err := Load(f)
	if err != nil {
		t.Fatal(err)
	}
	if b.NodeID() != "n1" || b.Leaf().Subject.CommonName != "n1" {
		t.Errorf("NodeID = %q, CN = %q", b.NodeID(), b.Leaf().Subject.CommonName)
	}

	t.Run("key readable by others", func(t *testing.T) {
		f := p.writeFiles(t, "n1")
		for _, mode := range []os.FileMode{0o644, 0o640, 0o604, 0o660} {
			if err := os.Chmod(f.KeyFile, mode); err != nil {
				t.Fatal(err)
			}
			if _, err := Load(f); !errors.Is(err, ErrKeyPermissions) {
				t.Errorf("mode %04o: err = %v, want ErrKeyPermissions", mode, err)
			}
		}
		if err := os.Chmod(f.KeyFile, 0o400); err != nil {
			t.Fatal(err)
		}
		if _, err := Load(f); err != nil {
			t.Errorf("mode 0400: %v", err)
		}
	})
	t.Run("cert from another CA", func(t *testing.T) {
		f := p.writeFiles(t, "n1")
		other := newPKI(t, "Other CA")
		if err := os.WriteFile(f.CAFile, other.cert, 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := Load(f); err == nil || !strings.Contains(err.Error(), "does not verify") {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("CA rotation: two CAs in the CA file", func(t *testing.T) {
		f := p.writeFiles(t, "n1")
		other := newPKI(t, "New CA")
		if err := os.WriteFile(f.CAFile, append(other.cert, p.cert...), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := Load(f); err != nil {
			t.Error(err)
		}
	})
	t.Run("key of another cert", func(t *testing.T) {
		f := p.writeFiles(t, "n1")
		_, k := p.issue(t, "n2")
		if err := os.WriteFile(f.KeyFile, k, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := Load(f); err == nil {
			t.Error("Load accepted a key that does not match the certificate")
		}
	})
	t.Run("expired", func(t *testing.T) {
		then := time.Now().Add(-2 * time.Hour)
		c, k, err := issueNodeCert(p.cert, p.key, "n1", testHosts, then, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := FromPEM(p.cert, c, k); err == nil || !strings.Contains(err.Error(), "expired") {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("missing file", func(t *testing.T) {
		f := p.writeFiles(t, "n1")
		f.KeyFile += ".missing"
		if _, err := Load(f); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("err = %v", err)
		}
	})
}

func TestCheckBind(t *testing.T) {
	for _, tc := range []struct {
		name        string
		addr        string
		allowPublic bool
		wantPublic  bool // ErrPublicBind
		wantErr     bool // any other error
	}{
		{name: "ipv4 loopback", addr: "127.0.0.1:7000"},
		{name: "other 127/8 address", addr: "127.0.0.2:7000"},
		{name: "ipv6 loopback", addr: "[::1]:7000"},
		{name: "localhost", addr: "localhost:7000"},
		{name: "LOCALHOST", addr: "LOCALHOST:0"},
		{name: "v4-mapped loopback", addr: "[::ffff:127.0.0.1]:7000"},
		{name: "port zero", addr: "127.0.0.1:0"},
		{name: "empty host", addr: ":7000", wantPublic: true},
		{name: "ipv4 any", addr: "0.0.0.0:7000", wantPublic: true},
		{name: "ipv6 any", addr: "[::]:7000", wantPublic: true},
		{name: "private address", addr: "10.0.0.5:7000", wantPublic: true},
		{name: "public address", addr: "203.0.113.7:7000", wantPublic: true},
		{name: "ipv6 address", addr: "[2001:db8::1]:7000", wantPublic: true},
		{name: "host name", addr: "node1.example.org:7000", wantPublic: true},
		{name: "allowed any", addr: "0.0.0.0:7000", allowPublic: true},
		{name: "allowed empty host", addr: ":7000", allowPublic: true},
		{name: "allowed address", addr: "10.0.0.5:7000", allowPublic: true},
		{name: "no port", addr: "127.0.0.1", wantErr: true},
		{name: "named port", addr: "127.0.0.1:http", wantErr: true},
		{name: "port too large", addr: "127.0.0.1:65536", wantErr: true},
		{name: "no port, allowed", addr: "0.0.0.0", allowPublic: true, wantErr: true},
		{name: "empty", addr: "", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckBind(tc.addr, tc.allowPublic)
			switch {
			case tc.wantPublic:
				if !errors.Is(err, ErrPublicBind) {
					t.Errorf("CheckBind(%q, %v) = %v, want ErrPublicBind", tc.addr, tc.allowPublic, err)
				}
			case tc.wantErr:
				if err == nil || errors.Is(err, ErrPublicBind) {
					t.Errorf("CheckBind(%q, %v) = %v, want an address error", tc.addr, tc.allowPublic, err)
				}
			case err != nil:
				t.Errorf("CheckBind(%q, %v) = %v", tc.addr, tc.allowPublic, err)
			}
		})
	}
}

func TestNewGossipKey(t *testing.T) {
	a, err := NewGossipKey()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := NewGossipKey()
	k, err := base64.StdEncoding.DecodeString(a)
	if err != nil || len(k) != 32 {
		t.Errorf("key %q: %d bytes, %v", a, len(k), err)
	}
	if a == b {
		t.Error("two keys are equal")
	}
}
