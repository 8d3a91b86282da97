package peertls

import (
	"crypto/tls"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestHTTP2MutualTLS(t *testing.T) {
	p := newPKI(t, "Test CA")
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, err := PeerNodeID(*r.TLS)
		if err != nil {
			http.Error(w, err.Error(), http.StatusForbidden)
			return
		}
		io.WriteString(w, id)
	}))
	srv.TLS = p.bundle(t, "server").ServerConfig()
	srv.EnableHTTP2 = true
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	defer srv.Close()

	client := p.bundle(t, "client-1").HTTPClient()
	defer client.CloseIdleConnections()
	resp, err := client.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "client-1" {
		t.Errorf("status %d, body %q; want 200 client-1", resp.StatusCode, body)
	}
	if resp.ProtoMajor != 2 {
		t.Errorf("protocol %s, want HTTP/2", resp.Proto)
	}
	if id, err := PeerNodeID(*resp.TLS); err != nil || id != "server" {
		t.Errorf("server PeerNodeID = %q, %v", id, err)
	}

	reject := func(name string, cfg *tls.Config) {
		t.Run(name, func(t *testing.T) {
			c := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true}}
			defer c.CloseIdleConnections()
			resp, err := c.Get(srv.URL)
			if err == nil {
				resp.Body.Close()
				t.Fatalf("request succeeded with status %d", resp.StatusCode)
			}
			t.Logf("client error: %v", err)
		})
	}
	reject("client without certificate", &tls.Config{RootCAs: p.bundle(t, "x").CertPool()})
	other := newPKI(t, "Other CA")
	reject("client cert from another CA", other.foreignBundle(t, "client-2", p).ClientConfig(""))
	reject("expired client cert", p.expiredBundle(t, "client-3").ClientConfig(""))
	reject("server not trusted", other.bundle(t, "client-4").ClientConfig(""))
}
