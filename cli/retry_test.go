package cli

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestRetryOnRateLimit: a request the node refused for its rate limit (429)
// is sent again, body and all, after Retry-After; other answers are not
// retried, and the tries are bounded.
func TestRetryOnRateLimit(t *testing.T) {
	var calls atomic.Int32
	var bodies []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		bodies = append(bodies, string(b))
		if n := calls.Add(1); n <= 2 || r.URL.Path == "/always" {
			w.Header().Set("Retry-After", "0")
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()
	c := &http.Client{Transport: retryTransport{inner: http.DefaultTransport, tries: 5}}
	start := time.Now()
	resp, err := c.Post(srv.URL+"/x", "application/proto", strings.NewReader("payload"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || calls.Load() != 3 {
		t.Fatalf("status %d after %d calls, want 200 after 3", resp.StatusCode, calls.Load())
	}
	for i, b := range bodies {
		if b != "payload" {
			t.Fatalf("attempt %d sent body %q", i+1, b)
		}
	}
	if time.Since(start) > 5*time.Second {
		t.Fatalf("Retry-After 0 took %v", time.Since(start))
	}
	calls.Store(0)
	resp, err = c.Post(srv.URL+"/always", "application/proto", strings.NewReader("payload"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests || calls.Load() != 5 {
		t.Fatalf("always refused: status %d after %d calls, want 429 after 5", resp.StatusCode, calls.Load())
	}
}
