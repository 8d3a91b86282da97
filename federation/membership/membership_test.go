package membership

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestIntrospectionMatchesMemberlist(t *testing.T) {
	// If this fails after a memberlist upgrade, introspect.go must be
	// adapted: states would silently degrade to alive/dead.
	if !mlLayout.ok {
		t.Fatalf("cannot read memberlist node states: %s", mlLayout.whyDisabled)
	}
}

func TestClusterFormsAndMetaPropagates(t *testing.T) {
	nodes := startCluster(t, 5)
	want := names(nodes)
	for _, o := range nodes {
		ms := o.m.Members()
		var got []string
		for _, mem := range ms {
			got = append(got, mem.Name)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("%s: members %v, want %v (sorted)", o.name, got, want)
		}
		for i, mem := range ms {
			if mem.Meta != testMeta(mem.Name) {
				t.Errorf("%s sees %s with meta %+v", o.name, mem.Name, mem.Meta)
			}
			if mem.GossipAddr != nodes[i].addr() || mem.State != StateAlive || mem.Since.IsZero() {
				t.Errorf("%s sees %s as %+v", o.name, mem.Name, mem)
			}
		}
		if len(o.m.Alive()) != 5 {
			t.Errorf("%s: Alive() = %d members", o.name, len(o.m.Alive()))
		}
		if l := o.m.Local(); l.Name != o.name || l.State != StateAlive || l.Meta != testMeta(o.name) {
			t.Errorf("%s: Local() = %+v", o.name, l)
		}
	}
	// Every node got a join event for everyone, itself included.
	waitFor(t, 10*time.Second, "join events", func() error {
		for _, o := range nodes {
			for _, n := range want {
				if !o.rec.has("join " + n + " alive") {
					return fmt.Errorf("%s: no join event for %s: %s", o.name, n, o.rec)
				}
			}
		}
		return nil
	})

	c := nodes[2]
	newMeta := testMeta("c")
	newMeta.Role = RoleVoter
	newMeta.Version = "1.1.0"
	newMeta.RaftAddr = "127.0.0.1:19999"
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.m.UpdateMeta(ctx, newMeta); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	waitFor(t, 10*time.Second, "meta update everywhere", func() error {
		for _, o := range nodes {
			if got := states(o.m)["c"].Meta; got != newMeta {
				return fmt.Errorf("%s sees c with %+v", o.name, got)
			}
			if m, _ := o.rec.lastOf("c"); m.Meta != newMeta {
				return fmt.Errorf("%s: no update event for c: %s", o.name, o.rec)
			}
		}
		return nil
	})
	t.Logf("meta update propagated to 5 nodes in %v", time.Since(start).Round(time.Millisecond))

	changed := newMeta
	changed.NodeID = "z"
	if err := c.m.UpdateMeta(ctx, changed); !errors.Is(err, ErrInvalidMeta) {
		t.Errorf("changing NodeID: err = %v, want ErrInvalidMeta", err)
	}
}

func TestFailureIsSuspectThenDeadAndLeaveIsLeft(t *testing.T) {
	nodes := startCluster(t, 5)
	a, d, e := nodes[0], nodes[3], nodes[4]
	observers := nodes[:4]

	// Record every state each observer shows for e.
	var mu sync.Mutex
	seen := make(map[string][]State)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	sample := func() {
		for _, o := range observers {
			st := states(o.m)["e"].State
			mu.Lock()
			if s := seen[o.name]; len(s) == 0 || s[len(s)-1] != st {
				seen[o.name] = append(s, st)
			}
			mu.Unlock()
		}
	}
	go func() {
		defer wg.Done()
		for {
			sample()
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()

	start := time.Now()
	if err := e.m.Shutdown(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "e dead everywhere", func() error {
		for _, o := range observers {
			if st := states(o.m)["e"].State; st != StateDead {
				return fmt.Errorf("%s sees e as %q", o.name, st)
			}
		}
		return nil
	})
	t.Logf("failure detected by 4 nodes in %v", time.Since(start).Round(time.Millisecond))
	close(stop)
	wg.Wait()
	sample() // the last state, in case the sampler stopped just before it
	suspects := 0
	for _, o := range observers {
		s := seen[o.name]
		switch {
		case slices.Equal(s, []State{StateAlive, StateSuspect, StateDead}):
			suspects++
		case slices.Equal(s, []State{StateAlive, StateDead}):
		default:
			t.Errorf("%s showed e as %v, want alive→suspect→dead", o.name, s)
		}
	}
	if suspects == 0 {
		t.Errorf("no observer showed e as suspect before dead: %v", seen)
	}
	waitFor(t, 5*time.Second, "leave events for e", func() error {
		for _, o := range observers {
			if !o.rec.has("leave e dead") {
				return fmt.Errorf("%s: %s", o.name, o.rec)
			}
		}
		return nil
	})

	// A graceful leave shows as left.
	if err := d.m.Leave(2 * time.Second); err != nil {
		t.Fatal(err)
	}
	if st := d.m.Local().State; st != StateLeft {
		t.Errorf("d's own state after Leave: %q", st)
	}
	waitFor(t, 5*time.Second, "d left everywhere", func() error {
		for _, o := range nodes[:3] {
			if st := states(o.m)["d"].State; st != StateLeft {
				return fmt.Errorf("%s sees d as %q", o.name, st)
			}
			if !o.rec.has("leave d left") {
				return fmt.Errorf("%s: %s", o.name, o.rec)
			}
		}
		return nil
	})
	if _, err := d.m.Join(context.Background(), []string{a.addr()}); !errors.Is(err, ErrLeft) {
		t.Errorf("Join after Leave: %v", err)
	}
	if err := d.m.UpdateMeta(context.Background(), testMeta("d")); !errors.Is(err, ErrLeft) {
		t.Errorf("UpdateMeta after Leave: %v", err)
	}

	// d keeps running; the others' rejoin loops contact it but must not
	// bring it back.
	deadline := time.Now().Add(6 * testRejoin)
	for time.Now().Before(deadline) {
		for _, o := range nodes[:3] {
			if st := states(o.m)["d"].State; st != StateLeft {
				t.Fatalf("%s sees d, which left, as %q", o.name, st)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}

	// After memberlist forgets them (GossipToTheDeadTime), Members still
	// lists them, for the rejoin loop.
	waitFor(t, 4*localGossipToTheDeadTime, "memberlist forgets d and e", func() error {
		for _, v := range viewNodes(a.m.list) {
			if v.node.Name == "d" || v.node.Name == "e" {
				return fmt.Errorf("memberlist still has %s", v.node.Name)
			}
		}
		return nil
	})
	st := states(a.m)
	if st["d"].State != StateLeft || st["e"].State != StateDead || st["e"].GossipAddr == "" {
		t.Errorf("remembered: d=%+v e=%+v", st["d"], st["e"])
	}
	if len(a.m.Alive()) != 3 {
		t.Errorf("Alive() = %v", a.m.Alive())
	}
}

// partition starts 5 nodes with the given rejoin interval, splits them into
// {a,b} | {c,d,e} and waits until each side has seen the other dead for
// longer than GossipToTheDeadTime (after which memberlist stops gossiping to
// them).
func partition(t *testing.T, rejoin time.Duration) (nodes, sideA, sideB []*testNode) {
	nodes = startCluster(t, 5, func(c *Config) { c.RejoinInterval = rejoin })
	sideA, sideB = nodes[:2], nodes[2:]
	group := func(ns []*testNode) map[string]*FaultyTransport {
		g := make(map[string]*FaultyTransport)
		for _, n := range ns {
			g[n.addr()] = n.ft
		}
		return g
	}
	start := time.Now()
	Partition(group(sideA), group(sideB))
	split := func(x, y []*testNode) error {
		for _, o := range x {
			st := states(o.m)
			for _, p := range y {
				m := st[p.name]
				if m.State != StateDead {
					return fmt.Errorf("%s sees %s as %q", o.name, p.name, m.State)
				}
				if age := time.Since(m.Since); age < localGossipToTheDeadTime+500*time.Millisecond {
					return fmt.Errorf("%s has seen %s dead for only %v", o.name, p.name, age)
				}
			}
		}
		return nil
	}
	waitFor(t, 20*time.Second, "partition past GossipToTheDeadTime", func() error {
		if err := split(sideA, sideB); err != nil {
			return err
		}
		return split(sideB, sideA)
	})
	if err := allAlive(sideA, sideA); err != nil {
		t.Fatalf("inside side A: %v", err)
	}
	if err := allAlive(sideB, sideB); err != nil {
		t.Fatalf("inside side B: %v", err)
	}
	pk, dials := nodes[0].ft.Dropped()
	if pk == 0 {
		t.Fatalf("faulty transport dropped nothing")
	}
	t.Logf("partition {a,b}|{c,d,e} settled after %v (a dropped %d packets, refused %d dials)",
		time.Since(start).Round(time.Millisecond), pk, dials)
	for _, n := range nodes {
		n.ft.Heal()
	}
	return nodes, sideA, sideB
}

func TestPartitionLongerThanGossipToTheDeadHeals(t *testing.T) {
	nodes, _, _ := partition(t, testRejoin)
	start := time.Now()
	waitFor(t, 10*time.Second, "all 5 alive everywhere after heal", func() error {
		return allAlive(nodes, nodes)
	})
	t.Logf("healed in %v with RejoinInterval %v", time.Since(start).Round(time.Millisecond), testRejoin)
}

// The control: without the rejoin loop the same partition stays split, so
// the test above can fail.
func TestPartitionStaysSplitWithoutRejoin(t *testing.T) {
	nodes, sideA, sideB := partition(t, -1)
	window := localGossipToTheDeadTime + localPushPullInterval
	deadline := time.Now().Add(window)
	for time.Now().Before(deadline) {
		for _, o := range sideA {
			st := states(o.m)
			for _, p := range sideB {
				if st[p.name].State == StateAlive {
					t.Fatalf("%s sees %s alive again without the rejoin loop", o.name, p.name)
				}
			}
		}
		for _, o := range sideB {
			st := states(o.m)
			for _, p := range sideA {
				if st[p.name].State == StateAlive {
					t.Fatalf("%s sees %s alive again without the rejoin loop", o.name, p.name)
				}
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("still split %v after healing the network", window)
	// The network itself is fine: one explicit join merges the halves.
	if _, err := nodes[0].m.Join(context.Background(), []string{nodes[2].addr()}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "merge after explicit join", func() error { return allAlive(nodes, nodes) })
}

func TestOutsidersCannotJoin(t *testing.T) {
	nodes := startCluster(t, 3)
	seed := nodes[0].addr()
	outsiders := []*testNode{
		newTestNode(t, "wrongkey", func(c *Config) { c.Keyring = [][]byte{key2} }),
		newTestNode(t, "plaintext", func(c *Config) { c.Keyring, c.AllowPlaintext = nil, true }),
		newTestNode(t, "otherlabel", func(c *Config) { c.Label = "other-federation" }),
		newTestNode(t, "nolabel", func(c *Config) { c.Label = "" }),
	}
	for _, o := range outsiders {
		if n, err := o.m.Join(context.Background(), []string{seed}); err == nil {
			t.Errorf("%s joined (%d)", o.name, n)
		}
	}
	// Their rejoin loops keep trying the seed; nobody may ever see them.
	deadline := time.Now().Add(1500 * time.Millisecond)
	for time.Now().Before(deadline) {
		for _, n := range nodes {
			for _, o := range outsiders {
				if _, ok := states(n.m)[o.name]; ok {
					t.Fatalf("%s sees outsider %s", n.name, o.name)
				}
			}
		}
		for _, o := range outsiders {
			if ms := o.m.Members(); len(ms) != 1 {
				t.Fatalf("outsider %s sees %d members", o.name, len(ms))
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Control: a node with the right key and label does get in.
	good := newTestNode(t, "good")
	if _, err := good.m.Join(context.Background(), []string{seed}); err != nil {
		t.Fatal(err)
	}
	all := append(slices.Clone(nodes), good)
	waitFor(t, 5*time.Second, "good node joined", func() error { return allAlive(all, all) })
}

// A node that is alone re-joins its configured seeds by itself.
func TestRejoinLoopJoinsSeedsWhenAlone(t *testing.T) {
	a := newTestNode(t, "a")
	b := newTestNode(t, "b", func(c *Config) { c.Join = []string{a.m.Local().GossipAddr} })
	// b never calls Join.
	both := []*testNode{a, b}
	waitFor(t, 5*time.Second, "b joined through the rejoin loop", func() error { return allAlive(both, both) })
}

func TestForgetAfter(t *testing.T) {
	n := newTestNode(t, "n", func(c *Config) { c.ForgetAfter = time.Minute; c.RejoinInterval = -1 })
	n.m.mu.Lock()
	n.m.peers["old"] = Member{Name: "old", GossipAddr: "127.0.0.1:1", State: StateDead, Since: time.Now().Add(-2 * time.Minute)}
	n.m.peers["recent"] = Member{Name: "recent", GossipAddr: "127.0.0.1:2", State: StateLeft, Since: time.Now()}
	n.m.mu.Unlock()
	st := states(n.m)
	if st["old"].State != StateDead || st["recent"].State != StateLeft {
		t.Fatalf("remembered peers not listed: %v", st)
	}
	n.m.forget(n.m.current())
	st = states(n.m)
	if _, ok := st["old"]; ok {
		t.Error("peer dead for longer than ForgetAfter still listed")
	}
	if _, ok := st["recent"]; !ok {
		t.Error("recently left peer forgotten")
	}
}

// monitor polls every node's view and records any node seen dead or left.
type monitor struct {
	nodes      []*testNode
	stop, done chan struct{}
	mu         sync.Mutex
	violations []string
	suspects   int
	polls      int
}

func startMonitor(nodes []*testNode) *monitor {
	mo := &monitor{nodes: nodes, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(mo.done)
		for {
			for _, o := range mo.nodes {
				for _, mem := range o.m.Members() {
					mo.mu.Lock()
					switch mem.State {
					case StateDead, StateLeft:
						mo.violations = append(mo.violations, fmt.Sprintf("%s saw %s %s", o.name, mem.Name, mem.State))
					case StateSuspect:
						mo.suspects++
					}
					mo.mu.Unlock()
				}
			}
			mo.mu.Lock()
			mo.polls++
			mo.mu.Unlock()
			select {
			case <-mo.stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()
	return mo
}

func (mo *monitor) finish() (violations []string, suspects, polls int) {
	close(mo.stop)
	<-mo.done
	return mo.violations, mo.suspects, mo.polls
}

func TestKeyRotation(t *testing.T) {
	nodes := startCluster(t, 5)
	mo := startMonitor(nodes)
	each := func(what string, f func(*Membership) error, pause time.Duration) {
		for _, n := range nodes {
			if err := f(n.m); err != nil {
				t.Fatalf("%s on %s: %v", what, n.name, err)
			}
			time.Sleep(pause)
		}
	}
	// The pauses let gossip run with the cluster in each mixed state.
	each("install", func(m *Membership) error { return m.InstallKey(key2) }, 50*time.Millisecond)
	for _, n := range nodes {
		if got := n.m.ListKeys(); len(got) != 2 || !bytes.Equal(got[0], key1) || !bytes.Equal(got[1], key2) {
			t.Fatalf("%s keys after install: %x", n.name, got)
		}
	}
	each("use", func(m *Membership) error { return m.UseKey(key2) }, 300*time.Millisecond)
	if err := nodes[0].m.RemoveKey(key2); !errors.Is(err, ErrPrimaryKey) {
		t.Errorf("removing the primary key: %v", err)
	}
	each("remove", func(m *Membership) error { return m.RemoveKey(key1) }, 50*time.Millisecond)
	// Run past a push/pull interval and many probe rounds with only key2.
	time.Sleep(localPushPullInterval + 500*time.Millisecond)
	violations, suspects, polls := mo.finish()
	if len(violations) > 0 {
		t.Fatalf("during rotation: %d dead/left sightings, first: %v", len(violations), violations[:min(5, len(violations))])
	}
	if polls < 50 {
		t.Fatalf("monitor polled only %d times", polls)
	}
	t.Logf("rotation: %d monitor polls, no dead sightings, %d suspect sightings", polls, suspects)
	if err := allAlive(nodes, nodes); err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		if got := n.m.ListKeys(); len(got) != 1 || !bytes.Equal(got[0], key2) {
			t.Fatalf("%s keys after rotation: %x", n.name, got)
		}
	}

	seed := nodes[0].addr()
	stale := newTestNode(t, "stale") // key1 only
	if _, err := stale.m.Join(context.Background(), []string{seed}); err == nil {
		t.Fatal("node with only the old key joined")
	}
	fresh := newTestNode(t, "fresh", func(c *Config) { c.Keyring = [][]byte{key2} })
	if _, err := fresh.m.Join(context.Background(), []string{seed}); err != nil {
		t.Fatal(err)
	}
	all := append(slices.Clone(nodes), fresh)
	waitFor(t, 5*time.Second, "fresh node joined", func() error { return allAlive(all, all) })
	for _, n := range all {
		if _, ok := states(n.m)["stale"]; ok {
			t.Fatalf("%s sees the stale node", n.name)
		}
	}
}

// The control for TestKeyRotation: using a key before every node has it
// installed is caught by the same monitor.
func TestKeyUsedBeforeInstalledEverywhereIsDetected(t *testing.T) {
	nodes := startCluster(t, 3)
	mo := startMonitor(nodes)
	c := nodes[2]
	if err := c.m.InstallKey(key2); err != nil {
		t.Fatal(err)
	}
	if err := c.m.UseKey(key2); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the monitor to see c dead", func() error {
		mo.mu.Lock()
		defer mo.mu.Unlock()
		for _, v := range mo.violations {
			if strings.HasSuffix(v, "saw c dead") {
				return nil
			}
		}
		return fmt.Errorf("a sees c as %q", states(nodes[0].m)["c"].State)
	})
	violations, _, _ := mo.finish()
	t.Logf("first sightings: %v", violations[:min(3, len(violations))])
}

func TestMeta(t *testing.T) {
	m := testMeta("x")
	b, err := m.Encode()
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeMeta(b)
	if err != nil || got != m {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	// Fields appended by a later version are ignored.
	if got, err := DecodeMeta(append(bytes.Clone(b), 3, 'n', 'e', 'w')); err != nil || got != m {
		t.Errorf("with trailing field: %+v, %v", got, err)
	}
	for _, bad := range [][]byte{nil, {0}, {1}, b[:len(b)-1], {1, 200, 1}} {
		if _, err := DecodeMeta(bad); !errors.Is(err, ErrInvalidMeta) {
			t.Errorf("DecodeMeta(%v): %v", bad, err)
		}
	}

	big := m
	big.Version = strings.Repeat("v", MetaMaxSize)
	err = big.Validate()
	if !errors.Is(err, ErrMetaTooLarge) || !strings.Contains(err.Error(), "limit is 512") {
		t.Errorf("oversized meta: %v", err)
	}
	// Exactly at the limit is fine.
	fit := m
	fit.Version = ""
	b, _ = fit.Encode()
	fit.Version = strings.Repeat("v", MetaMaxSize-len(b)-1) // 1 byte of the length prefix
	if b, err := fit.Encode(); err != nil || len(b) != MetaMaxSize {
		t.Errorf("meta at the limit: %d bytes, %v", len(b), err)
	}

	for _, bad := range []Meta{{Role: RoleMember}, {NodeID: "x", Role: "king"}, {NodeID: "x"}, {NodeID: "x\xff", Role: RoleMember}} {
		if err := bad.Validate(); !errors.Is(err, ErrInvalidMeta) {
			t.Errorf("Validate(%+v): %v", bad, err)
		}
	}

	// The limit is enforced by Config.Validate, New and UpdateMeta.
	cfg := DefaultConfig()
	cfg.Meta, cfg.Keyring = big, [][]byte{key1}
	if err := cfg.Validate(); !errors.Is(err, ErrMetaTooLarge) {
		t.Errorf("Config.Validate with oversized meta: %v", err)
	}
	if _, err := New(cfg, nil); !errors.Is(err, ErrMetaTooLarge) {
		t.Errorf("New with oversized meta: %v", err)
	}
	n := newTestNode(t, "x")
	big.NodeID = "x"
	if err := n.m.UpdateMeta(context.Background(), big); !errors.Is(err, ErrMetaTooLarge) {
		t.Errorf("UpdateMeta with oversized meta: %v", err)
	}
	if got := n.m.Local().Meta; got != testMeta("x") {
		t.Errorf("meta changed by a refused update: %+v", got)
	}
}

func TestConfigValidate(t *testing.T) {
	base := func() Config {
		c := DefaultConfig()
		c.Meta = testMeta("n1")
		c.Keyring = [][]byte{key1}
		return c
	}
	if err := base().Validate(); err != nil {
		t.Fatalf("base config: %v", err)
	}
	zero := Config{Meta: testMeta("n1"), Keyring: [][]byte{key1}}
	if err := zero.Validate(); err != nil {
		t.Errorf("zero values with defaults: %v", err)
	}
	for name, mod := range map[string]func(*Config){
		"no key":         func(c *Config) { c.Keyring = nil },
		"short key":      func(c *Config) { c.Keyring = [][]byte{make([]byte, 15)} },
		"duplicate key":  func(c *Config) { c.Keyring = [][]byte{key1, key1} },
		"no name":        func(c *Config) { c.Meta.NodeID = "" },
		"bad role":       func(c *Config) { c.Meta.Role = "" },
		"bad profile":    func(c *Config) { c.Profile = "wan" },
		"long label":     func(c *Config) { c.Label = strings.Repeat("l", 256) },
		"bad port":       func(c *Config) { c.BindPort = 70000 },
		"bad advertise":  func(c *Config) { c.AdvertisePort = -1 },
		"empty seed":     func(c *Config) { c.Join = []string{""} },
		"plaintext only": func(c *Config) { c.Keyring = [][]byte{} },
	} {
		c := base()
		mod(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	c := base()
	c.Keyring, c.AllowPlaintext = nil, true
	if err := c.Validate(); err != nil {
		t.Errorf("AllowPlaintext without keys: %v", err)
	}
}

func TestPlaintextNodeHasNoKeyring(t *testing.T) {
	n := newTestNode(t, "p", func(c *Config) { c.Keyring, c.AllowPlaintext = nil, true })
	if err := n.m.InstallKey(key1); !errors.Is(err, ErrNoEncryption) {
		t.Errorf("InstallKey: %v", err)
	}
	if n.m.ListKeys() != nil {
		t.Errorf("ListKeys: %v", n.m.ListKeys())
	}
}

func TestParseMemberlistLine(t *testing.T) {
	for in, want := range map[string][2]string{
		"[ERR] memberlist: Push/Pull with b failed: x\n": {"error", "Push/Pull with b failed: x"},
		"[DEBUG] memberlist: Stream connection from=1\n": {"debug", "Stream connection from=1"},
		"[WARN] memberlist: Refuting a suspect message":  {"warn", "Refuting a suspect message"},
		"Err: Could not set the deadline: x":             {"info", "Err: Could not set the deadline: x"},
	} {
		l, m := parseMemberlistLine(in)
		if l != want[0] || m != want[1] {
			t.Errorf("%q: %q %q", in, l, m)
		}
	}
}

// Run last: a full life cycle must leave no goroutine behind.
func TestShutdownLeavesNoGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	func() {
		nodes := startCluster(t, 3)
		if err := nodes[2].m.Leave(time.Second); err != nil {
			t.Fatal(err)
		}
		for _, n := range nodes {
			if err := n.m.Shutdown(); err != nil {
				t.Fatal(err)
			}
			if err := n.m.Shutdown(); err != nil { // idempotent
				t.Fatal(err)
			}
		}
		if err := nodes[0].m.Leave(time.Second); !errors.Is(err, ErrShutdown) {
			t.Errorf("Leave after Shutdown: %v", err)
		}
	}()
	var after int
	deadline := time.Now().Add(5 * time.Second)
	for {
		after = runtime.NumGoroutine()
		if after <= before+1 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if after > before+1 {
		var buf bytes.Buffer
		_ = pprof.Lookup("goroutine").WriteTo(&buf, 1)
		t.Fatalf("%d goroutines before, %d after shutdown:\n%s", before, after, buf.String())
	}
}
