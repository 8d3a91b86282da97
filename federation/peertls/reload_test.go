package peertls

import (
	"bytes"
	"io"
	"log"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"
)

// writePEM replaces a node's certificate and key files (key first, as an
// operator copying files would; the bundle must not use the mismatched
// pair in between).
func writePEM(t *testing.T, f Files, ca, cert, key []byte) {
	t.Helper()
	if key != nil {
		if err := os.WriteFile(f.KeyFile, key, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if cert != nil {
		if err := os.WriteFile(f.CertFile, cert, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if ca != nil {
		if err := os.WriteFile(f.CAFile, ca, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func fastReload(t *testing.T) {
	old := ReloadCheckInterval
	ReloadCheckInterval = 10 * time.Millisecond
	t.Cleanup(func() { ReloadCheckInterval = old })
}

// mtlsServer serves the peer id of each client and records its
// certificate's serial number.
func mtlsServer(t *testing.T, b *Bundle) (*httptest.Server, *[]*big.Int) {
	t.Helper()
	var clientSerials []*big.Int
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		clientSerials = append(clientSerials, r.TLS.PeerCertificates[0].SerialNumber)
		id, _ := PeerNodeID(*r.TLS)
		io.WriteString(w, id)
	}))
	srv.TLS = b.ServerConfig()
	srv.EnableHTTP2 = true
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv, &clientSerials
}

// get makes one request on a new connection and returns the server
// certificate's serial number.
func get(b *Bundle, url string) (*big.Int, error) {
	c := b.HTTPClient()
	defer c.CloseIdleConnections()
	resp, err := c.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	return resp.TLS.PeerCertificates[0].SerialNumber, nil
}

func serialOf(t *testing.T, certPEM []byte) *big.Int {
	t.Helper()
	cs, err := parseCerts(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	return cs[0].SerialNumber
}

// TestCertificateRenewalWithoutRestart: a node's certificate and key files
// are replaced; new handshakes, as server and as client, use the new
// certificate without a restart; a replacement for another node id is not
// used.
func TestCertificateRenewalWithoutRestart(t *testing.T) {
	fastReload(t)
	p := newPKI(t, "Test CA")
	sf := p.writeFiles(t, "server")
	cf := p.writeFiles(t, "client")
	sb, err := Load(sf)
	if err != nil {
		t.Fatal(err)
	}
	cb, err := Load(cf)
	if err != nil {
		t.Fatal(err)
	}
	srv, clientSerials := mtlsServer(t, sb)

	first, err := get(cb, srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if want := sb.Leaf().SerialNumber; first.Cmp(want) != 0 {
		t.Fatalf("served serial %v, want %v", first, want)
	}

	// Renew both: new certificates and keys.
	sc, sk := p.issue(t, "server")
	cc, ck := p.issue(t, "client")
	writePEM(t, sf, nil, sc, sk)
	writePEM(t, cf, nil, cc, ck)
	time.Sleep(3 * ReloadCheckInterval)
	got, err := get(cb, srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if want := serialOf(t, sc); got.Cmp(want) != 0 {
		t.Fatalf("after renewal the server presented serial %v, want the new %v (old %v)", got, want, first)
	}
	if last, want := (*clientSerials)[len(*clientSerials)-1], serialOf(t, cc); last.Cmp(want) != 0 {
		t.Fatalf("after renewal the client presented serial %v, want the new %v", last, want)
	}
	if err := sb.ReloadError(); err != nil {
		t.Fatalf("reload error: %v", err)
	}

	// A certificate for another node in the server's files: refused, the
	// renewed one stays in use.
	oc, ok := p.issue(t, "intruder")
	writePEM(t, sf, nil, oc, ok)
	time.Sleep(3 * ReloadCheckInterval)
	got, err = get(cb, srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if want := serialOf(t, sc); got.Cmp(want) != 0 {
		t.Fatalf("after a bad replacement the server presented %v, want the last good %v", got, want)
	}
	if err := sb.ReloadError(); err == nil || !strings.Contains(err.Error(), "intruder") {
		t.Fatalf("reload error %v, want one naming the other node", err)
	}
	t.Logf("renewed: server serial %v -> %v, client's too; bad replacement refused: %v", first, got, sb.ReloadError())
}

// TestCARotation runs the documented CA rotation on files: (1) every node
// trusts old+new CA, (2) nodes are reissued by the new CA one by one,
// (3) the old CA is dropped. Nodes of either CA talk to each other in
// phase 2; after phase 3 a certificate of the old CA is refused.
func TestCARotation(t *testing.T) {
	fastReload(t)
	oldCA, newCA := newPKI(t, "Old CA"), newPKI(t, "New CA")
	af := oldCA.writeFiles(t, "a")
	bf := oldCA.writeFiles(t, "b")
	ab, err := Load(af)
	if err != nil {
		t.Fatal(err)
	}
	bb, err := Load(bf)
	if err != nil {
		t.Fatal(err)
	}
	srv, _ := mtlsServer(t, ab)
	if _, err := get(bb, srv.URL); err != nil {
		t.Fatalf("before rotation: %v", err)
	}

	// Without phase 1, a node reissued by the new CA is locked out.
	early := oldCA.writeFiles(t, "early")
	ec, ek := newCA.issue(t, "early")
	writePEM(t, early, bytes.Join([][]byte{oldCA.cert, newCA.cert}, nil), ec, ek)
	eb, err := Load(early)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := get(eb, srv.URL); err == nil {
		t.Fatal("a node of the new CA was accepted by a node trusting only the old CA")
	}

	// Phase 1: trust bundle old+new on every node.
	both := bytes.Join([][]byte{oldCA.cert, newCA.cert}, nil)
	writePEM(t, af, both, nil, nil)
	writePEM(t, bf, both, nil, nil)
	time.Sleep(3 * ReloadCheckInterval)
	if _, err := get(eb, srv.URL); err != nil {
		t.Fatalf("phase 1: a node of the new CA is refused by one trusting both: %v", err)
	}
	// Phase 2: b reissued by the new CA; a still has the old CA's cert.
	bc, bk := newCA.issue(t, "b")
	writePEM(t, bf, nil, bc, bk)
	time.Sleep(3 * ReloadCheckInterval)
	if _, err := get(bb, srv.URL); err != nil {
		t.Fatalf("phase 2: mixed CAs: %v", err)
	}
	if bb.Leaf().Issuer.CommonName != "New CA" {
		t.Fatalf("b's certificate is from %q after reissue", bb.Leaf().Issuer.CommonName)
	}
	ac, ak := newCA.issue(t, "a")
	writePEM(t, af, nil, ac, ak)
	// Phase 3: drop the old CA.
	writePEM(t, af, newCA.cert, nil, nil)
	writePEM(t, bf, newCA.cert, nil, nil)
	time.Sleep(3 * ReloadCheckInterval)
	serial, err := get(bb, srv.URL)
	if err != nil {
		t.Fatalf("phase 3: %v", err)
	}
	if serial.Cmp(serialOf(t, ac)) != 0 {
		t.Fatalf("phase 3: a still presents serial %v", serial)
	}
	sc, sk := oldCA.issue(t, "c")
	stale, err := FromPEM(both, sc, sk) // trusts both: the refusal is a's
	if err != nil {
		t.Fatal(err)
	}
	if _, err := get(stale, srv.URL); err == nil {
		t.Fatal("phase 3: a certificate of the dropped CA was accepted")
	}
	if err := ab.ReloadError(); err != nil {
		t.Fatal(err)
	}
}
