package node

import (
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/hashicorp/raft"
)

// Health checks for load balancers and orchestrators (Kubernetes
// livenessProbe / readinessProbe, HAProxy, nginx), on the public and the
// peer listener, open to anyone and never rate-limited (access.go,
// ratelimit.go):
//
//   - GET /healthz: 200 "ok" while the process serves HTTP. Restart the
//     node if it fails.
//   - GET /readyz: 200 when the node should get traffic, else 503; the
//     body lists each check as "name: ok|FAIL detail":
//     leader: a server knows a Raft leader (or is it); a member has heard
//     from the change feed within 3 s;
//     caught-up: a server's state has applied all but Config.ReadyMaxLag
//     of the entries Raft committed (a node catching up after a restart or
//     a snapshot install is not ready);
//     disk: the data dir's file system has more than the reserve free
//     (Config.DiskReserveBytes; a node that refuses writes for a full
//     disk still serves reads, but should not be sent writes).
//
// The gRPC health service (grpc.health.v1.Health, api_health.go) answers
// the leader check for gRPC-aware balancers.

// healthz answers GET /healthz.
func (n *Node) healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	fmt.Fprintln(w, "ok")
}

// readyCheck is one line of /readyz.
type readyCheck struct {
	name   string
	ok     bool
	detail string
}

// readiness runs the checks of /readyz.
func (n *Node) readiness() []readyCheck {
	var out []readyCheck
	if n.isServer() {
		addr, id := n.raft.LeaderWithID()
		switch {
		case n.raft.State() == raft.Leader:
			out = append(out, readyCheck{"leader", true, "this node"})
		case addr == "":
			out = append(out, readyCheck{"leader", false, "no Raft leader known"})
		default:
			out = append(out, readyCheck{"leader", true, string(id)})
		}
		commit, applied := n.raft.CommitIndex(), n.fsm.AppliedIndex()
		lag := uint64(0)
		if commit > applied {
			lag = commit - applied
		}
		out = append(out, readyCheck{"caught-up", lag <= n.cfg.ReadyMaxLag,
			fmt.Sprintf("applied %d of %d committed (lag %d, at most %d)", applied, commit, lag, n.cfg.ReadyMaxLag)})
	} else {
		st := n.staleness()
		out = append(out, readyCheck{"leader", st >= 0 && st <= followStaleWindow,
			fmt.Sprintf("change feed last heard %v ago (at most %v)", st.Round(time.Millisecond), followStaleWindow)})
	}
	if err := n.checkDisk(); err != nil {
		out = append(out, readyCheck{"disk", false, err.Error()})
	} else if free, reserve, err := n.disk.Free(); err == nil {
		out = append(out, readyCheck{"disk", true, fmt.Sprintf("%d MiB free, reserve %d MiB", free>>20, reserve>>20)})
	} else {
		out = append(out, readyCheck{"disk", true, "not checked: " + err.Error()})
	}
	return out
}

// readyz answers GET /readyz: 200 if every check passes, else 503.
func (n *Node) readyz(w http.ResponseWriter, _ *http.Request) {
	checks := n.readiness()
	var b strings.Builder
	code := http.StatusOK
	for _, c := range checks {
		status := "ok"
		if !c.ok {
			status, code = "FAIL", http.StatusServiceUnavailable
		}
		fmt.Fprintf(&b, "%s: %s %s\n", c.name, status, c.detail)
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = w.Write([]byte(b.String()))
}

// isHealthPath reports whether path is a health check (never rate-limited).
func isHealthPath(path string) bool { return path == "/healthz" || path == "/readyz" }
