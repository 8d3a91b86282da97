package node

import (
	"context"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// scrape fetches url and returns the body.
func scrape(t *testing.T, url string) (int, string) {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res.StatusCode, string(b)
}

// metricValue finds the value of the sample line that starts with name
// (with its labels, if any).
func metricValue(t *testing.T, body, name string) float64 {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`).FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("/metrics has no %s", name)
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestMetrics: /metrics on the admin listener exports the node's Raft and
// registry positions, apply time, write queue, handover counters and the
// expiry of its certificates, read from the live state; the public
// listener does not serve it.
func TestMetrics(t *testing.T) {
	n, _, _ := expiringNode(t, func(c *Config) { c.AdminAddr = "127.0.0.1:0" })
	code, body := scrape(t, n.AdminURL()+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: HTTP %d", code)
	}
	if got, want := metricValue(t, body, "verbund_registry_applied_index"), float64(n.AppliedIndex()); got < want-2 || got > want {
		t.Errorf("applied index %v, node says %v", got, want)
	}
	if metricValue(t, body, "verbund_raft_is_leader") != 1 || metricValue(t, body, "verbund_raft_commit_index") < 1 {
		t.Errorf("raft state not exported:\n%s", grep(body, "verbund_raft"))
	}
	if metricValue(t, body, "verbund_raft_apply_seconds_count") < 1 {
		t.Errorf("no apply time observed (genesis was applied)")
	}
	for _, name := range []string{"verbund_write_queue_depth", "verbund_handover_outbox_pending", `verbund_handover_total{event="sent"}`, "verbund_rate_limit_tracked_callers", "go_goroutines"} {
		metricValue(t, body, name)
	}
	left := metricValue(t, body, `verbund_expiry_remaining_seconds{id="test-operator",what="node_certificate"}`)
	if left < 47*3600 || left > 48*3600 {
		t.Errorf("node certificate: %v s left, want about 48 h", left)
	}
	// A rotation makes the retiring keys appear; the applied index moves.
	before := n.AppliedIndex()
	if _, err := n.RotateKeys(context.Background(), time.Hour, false); err != nil {
		t.Fatal(err)
	}
	_, body = scrape(t, n.AdminURL()+"/metrics")
	if got := metricValue(t, body, "verbund_registry_applied_index"); got <= float64(before) {
		t.Errorf("applied index %v after a rotation; was %d", got, before)
	}
	if !strings.Contains(body, `what="signing_key"`) {
		t.Errorf("retiring signing key not exported:\n%s", grep(body, "verbund_expiry"))
	}
	// A Raft snapshot is counted with its index, size and time.
	if metricValue(t, body, "verbund_raft_snapshots_written_total") != 0 {
		t.Errorf("a snapshot counted before any was taken:\n%s", grep(body, "verbund_raft_snapshot"))
	}
	if err := n.raft.Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	_, body = scrape(t, n.AdminURL()+"/metrics")
	if metricValue(t, body, "verbund_raft_snapshots_written_total") != 1 || metricValue(t, body, "verbund_raft_snapshot_last_bytes") <= 0 ||
		metricValue(t, body, "verbund_raft_snapshot_last_index") < float64(before) || metricValue(t, body, "verbund_raft_snapshot_last_seconds") <= 0 {
		t.Errorf("snapshot not exported:\n%s", grep(body, "verbund_raft_snapshot"))
	}
	if code, _ := scrape(t, n.APIURL()+"/metrics"); code != http.StatusForbidden && code != http.StatusNotFound {
		t.Errorf("/metrics on the public listener: HTTP %d", code)
	}
}

func grep(body, prefix string) string {
	var out []string
	for _, l := range strings.Split(body, "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
