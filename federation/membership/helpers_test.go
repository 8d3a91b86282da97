package membership

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// Set VERBUND_TEST_LOG=1 (or =debug) to see the nodes' logs.
func testLogger() *slog.Logger {
	switch os.Getenv("VERBUND_TEST_LOG") {
	case "":
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	case "debug":
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	default:
		return slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
}

func testKey(b byte) []byte {
	k := make([]byte, 32)
	for i := range k {
		k[i] = b + byte(i)
	}
	return k
}

const testLabel = "verbund-test"

var key1, key2 = testKey(1), testKey(101)

// testRejoin is the rejoin interval of test nodes.
const testRejoin = 250 * time.Millisecond

type testNode struct {
	name string
	m    *Membership
	ft   *FaultyTransport
	rec  *recorder
}

func (n *testNode) addr() string { return n.m.Local().GossipAddr }

func testMeta(name string) Meta {
	return Meta{NodeID: name, OrgID: "org-" + name, Role: RoleMember,
		APIAddr: "127.0.0.1:8" + name, RaftAddr: "127.0.0.1:9" + name, Version: "1.0.0"}
}

// newTestNode starts a node on 127.0.0.1 with a free port, behind a
// FaultyTransport, with the local profile, key1 and testLabel; opts adjust
// the config.
func newTestNode(t *testing.T, name string, opts ...func(*Config)) *testNode {
	t.Helper()
	cfg := DefaultConfig()
	cfg.NodeName = name
	cfg.Meta = testMeta(name)
	cfg.Keyring = [][]byte{key1}
	cfg.Label = testLabel
	cfg.Profile = ProfileLocal
	cfg.RejoinInterval = testRejoin
	cfg.Logger = testLogger().With("test_node", name)
	for _, o := range opts {
		o(&cfg)
	}
	nt, err := NewNetTransport("127.0.0.1", 0, cfg.Logger)
	if err != nil {
		t.Fatal(err)
	}
	ft := NewFaultyTransport(nt)
	cfg.Transport = ft
	rec := &recorder{}
	m, err := New(cfg, rec)
	if err != nil {
		_ = ft.Shutdown()
		t.Fatalf("New(%s): %v", name, err)
	}
	t.Cleanup(func() { _ = m.Shutdown() })
	return &testNode{name: name, m: m, ft: ft, rec: rec}
}

// startCluster starts n nodes a, b, c, ... that join through the first one and
// waits until all see all alive.
func startCluster(t *testing.T, n int, opts ...func(*Config)) []*testNode {
	t.Helper()
	nodes := make([]*testNode, n)
	for i := range nodes {
		nodes[i] = newTestNode(t, string(rune('a'+i)), opts...)
	}
	seed := nodes[0].addr()
	for _, nd := range nodes[1:] {
		if _, err := nd.m.Join(context.Background(), []string{seed}); err != nil {
			t.Fatalf("%s join: %v", nd.name, err)
		}
	}
	waitFor(t, 10*time.Second, "cluster formed", func() error { return allAlive(nodes, nodes) })
	return nodes
}

// waitFor polls cond until it returns nil or the timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s: %v", timeout, what, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func states(m *Membership) map[string]Member {
	out := make(map[string]Member)
	for _, mem := range m.Members() {
		out[mem.Name] = mem
	}
	return out
}

// allAlive checks that every observer sees every node in targets alive.
func allAlive(observers, targets []*testNode) error {
	for _, o := range observers {
		st := states(o.m)
		for _, tg := range targets {
			if got := st[tg.name].State; got != StateAlive {
				return fmt.Errorf("%s sees %s as %q", o.name, tg.name, got)
			}
		}
	}
	return nil
}

func names(nodes []*testNode) []string {
	var out []string
	for _, n := range nodes {
		out = append(out, n.name)
	}
	return out
}

// recorder is an EventHandler that keeps every event.
type recorder struct {
	mu     sync.Mutex
	events []string // "join a alive", "leave e dead", "update c"
	last   map[string]Member
}

func (r *recorder) add(kind string, m Member) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, fmt.Sprintf("%s %s %s", kind, m.Name, m.State))
	if r.last == nil {
		r.last = make(map[string]Member)
	}
	r.last[m.Name] = m
}

func (r *recorder) MemberJoin(m Member)   { r.add("join", m) }
func (r *recorder) MemberLeave(m Member)  { r.add("leave", m) }
func (r *recorder) MemberUpdate(m Member) { r.add("update", m) }

func (r *recorder) has(event string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Contains(r.events, event)
}

func (r *recorder) lastOf(name string) (Member, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	m, ok := r.last[name]
	return m, ok
}

func (r *recorder) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.events, "; ")
}
