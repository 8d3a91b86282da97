package node_test

import (
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/verbund/verbund/node"
	"github.com/verbund/verbund/node/nodetest"
)

func getHealth(t *testing.T, hc *http.Client, url string) (int, string) {
	t.Helper()
	resp, err := hc.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestHealthEndpoints: /healthz and /readyz on the public listener of
// three voters with the default rate limits on, without credentials:
// ready while a leader is known and the disk has room; a full disk and a
// lost quorum make /readyz 503 (naming the check) while /healthz stays
// 200; a load balancer polling far beyond the query budget is never
// refused.
func TestHealthEndpoints(t *testing.T) {
	var free atomic.Uint64
	free.Store(1 << 40)
	c := nodetest.Start(t, nodetest.Options{Voters: 3,
		DiskFree: func(i int, _ string) (uint64, error) {
			if i == 1 {
				return free.Load(), nil
			}
			return 1 << 40, nil
		},
		Configure: func(i int, cfg *node.Config) {
			cfg.RateLimits = node.DefaultRateLimits() // on, as in production: health checks are exempt
		}})
	defer c.Shutdown()
	c.WaitLeader(10 * time.Second)
	hc := &http.Client{Timeout: 5 * time.Second}
	for i, m := range c.Nodes {
		if err := c.WaitFor(10*time.Second, func() error {
			if code, body := getHealth(t, hc, m.API()+"/readyz"); code != http.StatusOK {
				return &readyErr{code, body}
			}
			return nil
		}); err != nil {
			t.Fatalf("node %d never ready: %v", i, err)
		}
	}
	code, body := getHealth(t, hc, c.Nodes[1].API()+"/readyz")
	t.Logf("/readyz of a follower: %d\n%s", code, body)

	// Polling beyond the query budget (5/s burst 20 per address): never
	// refused.
	for range 100 {
		if code, body := getHealth(t, hc, c.Nodes[1].API()+"/healthz"); code != http.StatusOK || body != "ok\n" {
			t.Fatalf("/healthz: %d %q", code, body)
		}
		if code, _ := getHealth(t, hc, c.Nodes[1].API()+"/readyz"); code != http.StatusOK {
			t.Fatalf("/readyz refused while polled: %d", code)
		}
	}

	// A full disk: not ready (disk), still alive.
	free.Store(1 << 20)
	if err := c.WaitFor(10*time.Second, func() error {
		if code, body := getHealth(t, hc, c.Nodes[1].API()+"/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "disk: FAIL") {
			return &readyErr{code, body}
		}
		return nil
	}); err != nil {
		t.Fatalf("full disk: %v", err)
	}
	_, body = getHealth(t, hc, c.Nodes[1].API()+"/readyz")
	t.Logf("/readyz with a full disk: 503\n%s", body)
	if code, _ := getHealth(t, hc, c.Nodes[1].API()+"/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz with a full disk: %d", code)
	}
	free.Store(1 << 40)

	// Quorum lost: the survivor has no leader, so not ready.
	leader := c.Leader()
	var survivor int
	for i, m := range c.Nodes {
		if m != leader {
			survivor = i
		}
	}
	for i, m := range c.Nodes {
		if i != survivor {
			c.Kill(m.Index)
		}
	}
	if err := c.WaitFor(15*time.Second, func() error {
		if code, body := getHealth(t, hc, c.Nodes[survivor].API()+"/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "leader: FAIL") {
			return &readyErr{code, body}
		}
		return nil
	}); err != nil {
		t.Fatalf("lost quorum: %v", err)
	}
	_, body = getHealth(t, hc, c.Nodes[survivor].API()+"/readyz")
	t.Logf("/readyz of the last voter of three: 503\n%s", body)
	if code, _ := getHealth(t, hc, c.Nodes[survivor].API()+"/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz without quorum: %d", code)
	}
}

type readyErr struct {
	code int
	body string
}

func (e *readyErr) Error() string { return http.StatusText(e.code) + ": " + e.body }
