package membership

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// State is a member's state as seen by the local node.
type State string

const (
	StateAlive   State = "alive"
	StateSuspect State = "suspect" // missed probes; dead unless it refutes in time
	StateDead    State = "dead"    // declared failed by the cluster
	StateLeft    State = "left"    // left gracefully (Leave)
)

func stateFrom(s memberlist.NodeStateType) State {
	switch s {
	case memberlist.StateAlive:
		return StateAlive
	case memberlist.StateSuspect:
		return StateSuspect
	case memberlist.StateLeft:
		return StateLeft
	default:
		return StateDead
	}
}

// Member is one node as seen by the local node. Its Meta is self-declared
// by that node: never authorise anything on it.
type Member struct {
	Meta
	// Name is the node's gossip name (Config.NodeName, by default the
	// NodeID).
	Name       string
	GossipAddr string // host:port
	State      State
	Since      time.Time // when State last changed, as seen locally
}

// EventHandler receives membership changes. Calls come one at a time, in
// order, from one goroutine of the Membership (never from inside
// memberlist), so a handler may call Members and friends, but must not call
// Shutdown and should not block for long. The local node's own join and meta
// updates are reported too.
type EventHandler interface {
	MemberJoin(Member)   // became alive (new, or back from dead/left)
	MemberLeave(Member)  // State is StateDead or StateLeft
	MemberUpdate(Member) // Meta changed
}

var (
	ErrShutdown     = errors.New("membership: shut down")
	ErrLeft         = errors.New("membership: node has left the cluster")
	ErrNoEncryption = errors.New("membership: gossip encryption is not configured")
	ErrPrimaryKey   = errors.New("membership: cannot remove the primary key; use another key first")
)

// Membership is a node's view of the federation's gossip cluster.
type Membership struct {
	cfg     Config
	log     *slog.Logger
	list    *memberlist.Memberlist
	keyring *memberlist.Keyring // nil without encryption
	events  *dispatcher         // nil without handler

	metaMu    sync.RWMutex
	meta      Meta
	metaBytes []byte

	mu       sync.Mutex
	peers    map[string]Member // last state memberlist reported for each node, kept after memberlist forgets it
	seeds    []string
	left     bool
	shutdown bool

	lifeMu       sync.Mutex // serialises memberlist Leave and Shutdown
	stop         chan struct{}
	wg           sync.WaitGroup
	shutdownOnce sync.Once
	shutdownErr  error
}

// New starts the node's gossip listener. It does not contact anyone: call
// Join (the rejoin loop also tries Config.Join while the node is alone).
func New(cfg Config, h EventHandler) (*Membership, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	keys := make([][]byte, len(cfg.Keyring))
	for i, k := range cfg.Keyring {
		keys[i] = bytes.Clone(k)
	}
	cfg.Keyring = keys
	cfg.Join = slices.Clone(cfg.Join)
	metaBytes, err := cfg.Meta.Encode()
	if err != nil {
		return nil, err
	}
	mc, err := cfg.memberlistConfig()
	if err != nil {
		return nil, err
	}
	m := &Membership{
		cfg:       cfg,
		log:       cfg.Logger.With("component", "membership", "node", cfg.NodeName),
		keyring:   mc.Keyring,
		meta:      cfg.Meta,
		metaBytes: metaBytes,
		peers:     make(map[string]Member),
		seeds:     slices.Clone(cfg.Join),
		stop:      make(chan struct{}),
	}
	d := &delegate{m: m}
	mc.Delegate, mc.Events, mc.Alive = d, d, d
	if h != nil {
		m.events = newDispatcher(h)
	}
	list, err := memberlist.Create(mc)
	if err != nil {
		if m.events != nil {
			m.events.close()
		}
		return nil, fmt.Errorf("membership: start memberlist: %w", err)
	}
	m.list = list
	if !mlLayout.ok {
		m.log.Warn("cannot read memberlist's node states; suspect is reported as alive and left as dead",
			"reason", mlLayout.whyDisabled)
	}
	if cfg.RejoinInterval > 0 {
		m.wg.Add(1)
		go m.rejoinLoop(cfg.RejoinInterval)
	}
	m.log.Info("gossip started", "addr", list.LocalNode().Address(), "encrypted", m.keyring != nil,
		"label", cfg.Label, "profile", cfg.Profile)
	return m, nil
}

// Join contacts the seeds (host:port; nil means Config.Join) and exchanges
// state with each reachable one. It returns how many were reached and an
// error only if none was. Seeds equal to this node's own gossip address are
// skipped; (0, nil) means there was nobody else to join. The seeds are
// remembered for the rejoin loop.
func (m *Membership) Join(ctx context.Context, seeds []string) (int, error) {
	if len(seeds) == 0 {
		seeds = m.cfg.Join
	}
	if len(seeds) == 0 {
		return 0, errors.New("membership: no seeds to join")
	}
	m.mu.Lock()
	switch {
	case m.shutdown:
		m.mu.Unlock()
		return 0, ErrShutdown
	case m.left:
		m.mu.Unlock()
		return 0, ErrLeft
	}
	for _, s := range seeds {
		if s != "" && !slices.Contains(m.seeds, s) {
			m.seeds = append(m.seeds, s)
		}
	}
	m.mu.Unlock()

	self := m.list.LocalNode().Address()
	n, tried := 0, 0
	var errs []error
	for _, s := range seeds {
		if s == "" || s == self {
			continue
		}
		if err := ctx.Err(); err != nil {
			errs = append(errs, err)
			break
		}
		tried++
		c, err := m.list.Join([]string{s})
		n += c
		if err != nil {
			errs = append(errs, err)
		}
	}
	if n == 0 && tried > 0 {
		return 0, fmt.Errorf("membership: join failed: %w", errors.Join(errs...))
	}
	if n > 0 {
		m.log.Info("joined cluster", "seeds_reached", n, "seeds", seeds)
	}
	return n, nil
}

// Members returns every node this node knows of, sorted by name: the live
// and suspect ones, and the dead and left ones, which stay listed (and are
// re-joined by the rejoin loop) after memberlist itself forgot them, until
// Config.ForgetAfter has passed since they died or left.
func (m *Membership) Members() []Member { return m.withPeers(m.current()) }

// withPeers lists a snapshot of memberlist's table (from current) with the
// dead and left peers memberlist no longer lists, sorted by name.
func (m *Membership) withPeers(views map[string]Member) []Member {
	m.mu.Lock()
	for name, p := range m.peers {
		if _, ok := views[name]; !ok && (p.State == StateDead || p.State == StateLeft) {
			views[name] = p
		}
	}
	m.mu.Unlock()
	out := make([]Member, 0, len(views))
	for _, v := range views {
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Alive returns the members in StateAlive (not suspect), sorted by name,
// including the local node unless it left.
func (m *Membership) Alive() []Member {
	all := m.Members()
	out := all[:0]
	for _, mem := range all {
		if mem.State == StateAlive {
			out = append(out, mem)
		}
	}
	return out
}

// Local returns the local node.
func (m *Membership) Local() Member {
	if v, ok := m.current()[m.cfg.NodeName]; ok {
		return v
	}
	n := m.list.LocalNode()
	mem := m.member(n, StateAlive, time.Time{})
	m.mu.Lock()
	if m.left {
		mem.State = StateLeft
	}
	m.mu.Unlock()
	return mem
}

// current returns the nodes memberlist knows now, by name.
func (m *Membership) current() map[string]Member {
	out := make(map[string]Member)
	if mlLayout.ok {
		for _, v := range viewNodes(m.list) {
			n := v.node
			out[n.Name] = m.member(&n, stateFrom(v.state), v.since)
		}
		return out
	}
	// Fallback: the public API lists only alive and suspect nodes, all
	// as alive.
	nodes := m.list.Members()
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, n := range nodes {
		since := time.Time{}
		if p, ok := m.peers[n.Name]; ok {
			since = p.Since
		}
		out[n.Name] = m.member(n, StateAlive, since)
	}
	return out
}

func (m *Membership) member(n *memberlist.Node, st State, since time.Time) Member {
	meta, err := DecodeMeta(n.Meta)
	if err != nil {
		// Cannot happen for peers (NotifyAlive refuses them) but keep
		// the node visible rather than hide it.
		meta = Meta{}
	}
	return Member{Meta: meta, Name: n.Name, GossipAddr: n.Address(), State: st, Since: since}
}

// UpdateMeta replaces the local node's meta and waits (up to the context's
// deadline, or 10 s) until the change has been broadcast. NodeID cannot
// change. On a broadcast timeout the new meta is still in force locally and
// spreads with later gossip.
func (m *Membership) UpdateMeta(ctx context.Context, meta Meta) error {
	b, err := meta.Encode()
	if err != nil {
		return err
	}
	m.mu.Lock()
	switch {
	case m.shutdown:
		m.mu.Unlock()
		return ErrShutdown
	case m.left:
		m.mu.Unlock()
		return ErrLeft
	}
	m.mu.Unlock()
	timeout := 10 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if timeout <= 0 {
		return context.DeadlineExceeded
	}
	m.metaMu.Lock()
	if meta.NodeID != m.meta.NodeID {
		m.metaMu.Unlock()
		return fmt.Errorf("%w: NodeID cannot change (%q to %q)", ErrInvalidMeta, m.meta.NodeID, meta.NodeID)
	}
	m.meta, m.metaBytes = meta, b
	m.metaMu.Unlock()
	if err := m.list.UpdateNode(timeout); err != nil {
		return fmt.Errorf("membership: meta updated locally, broadcast not confirmed: %w", err)
	}
	return nil
}

// InstallKey adds a gossip key for decryption. Rotating keys (see the
// package documentation): InstallKey on every node, then UseKey on every
// node, then RemoveKey of the old key on every node.
func (m *Membership) InstallKey(key []byte) error {
	if m.keyring == nil {
		return ErrNoEncryption
	}
	if err := m.keyring.AddKey(bytes.Clone(key)); err != nil {
		return fmt.Errorf("membership: install key: %w", err)
	}
	m.log.Info("gossip key installed", "keys", len(m.keyring.GetKeys()))
	return nil
}

// UseKey makes an installed key the primary (encrypting) key. Call it only
// once the key is installed on every node.
func (m *Membership) UseKey(key []byte) error {
	if m.keyring == nil {
		return ErrNoEncryption
	}
	if err := m.keyring.UseKey(key); err != nil {
		return fmt.Errorf("membership: use key: %w", err)
	}
	m.log.Info("gossip primary key changed")
	return nil
}

// RemoveKey removes a key that is not the primary. Removing a key that is
// not installed is not an error. Call it only once every node uses the new
// primary key.
func (m *Membership) RemoveKey(key []byte) error {
	if m.keyring == nil {
		return ErrNoEncryption
	}
	if bytes.Equal(key, m.keyring.GetPrimaryKey()) {
		return ErrPrimaryKey
	}
	if err := m.keyring.RemoveKey(key); err != nil {
		return fmt.Errorf("membership: remove key: %w", err)
	}
	m.log.Info("gossip key removed", "keys", len(m.keyring.GetKeys()))
	return nil
}

// ListKeys returns copies of the installed keys, primary first (nil without
// encryption).
func (m *Membership) ListKeys() [][]byte {
	if m.keyring == nil {
		return nil
	}
	keys := m.keyring.GetKeys()
	out := make([][]byte, len(keys))
	for i, k := range keys {
		out[i] = bytes.Clone(k)
	}
	return out
}

// Leave announces that this node leaves (others see it as left) and waits up
// to timeout for the announcement to go out. The node stops re-joining but
// keeps answering gossip until Shutdown.
func (m *Membership) Leave(timeout time.Duration) error {
	m.lifeMu.Lock()
	defer m.lifeMu.Unlock()
	m.mu.Lock()
	if m.shutdown {
		m.mu.Unlock()
		return ErrShutdown
	}
	already := m.left
	m.left = true
	m.mu.Unlock()
	if already {
		return nil
	}
	m.log.Info("leaving cluster")
	if err := m.list.Leave(timeout); err != nil {
		return fmt.Errorf("membership: leave: %w", err)
	}
	return nil
}

// Shutdown stops the rejoin loop, the gossip listener and the event
// handler's goroutine. Without a prior Leave the others will see this node
// fail (dead). Safe to call more than once.
func (m *Membership) Shutdown() error {
	m.shutdownOnce.Do(func() {
		m.mu.Lock()
		m.shutdown = true
		m.mu.Unlock()
		close(m.stop)
		m.wg.Wait()
		m.lifeMu.Lock()
		m.shutdownErr = m.list.Shutdown()
		m.lifeMu.Unlock()
		if m.events != nil {
			m.events.close()
		}
		m.log.Info("gossip stopped")
	})
	return m.shutdownErr
}

// rejoinLoop re-joins a few random dead or left peers (and the seeds while
// alone) every interval. memberlist does not probe dead nodes; after GossipToTheDeadTime
// it does not even gossip to them, so two halves of a healed partition would
// never find each other again without this.
func (m *Membership) rejoinLoop(interval time.Duration) {
	defer m.wg.Done()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-t.C:
			m.rejoinOnce()
		}
	}
}

const (
	rejoinPeersPerRound = 3 // dead/left peers contacted per round
	rejoinParallelism   = 4 // concurrent joins per round
)

func (m *Membership) rejoinOnce() {
	m.mu.Lock()
	if m.left || m.shutdown {
		m.mu.Unlock()
		return
	}
	seeds := slices.Clone(m.seeds)
	m.mu.Unlock()

	views := m.current()
	m.forget(views)
	members := m.withPeers(views)
	var selfAddr string
	var gone []string
	others := 0
	for _, mem := range members {
		if mem.Name == m.cfg.NodeName {
			selfAddr = mem.GossipAddr
			continue
		}
		switch mem.State {
		case StateAlive, StateSuspect:
			others++
		case StateDead, StateLeft:
			gone = append(gone, mem.GossipAddr)
		}
	}
	// One successful exchange merges both sides' whole state, so a few
	// random peers per round suffice; contacting every dead peer from
	// every node would make a healed partition cost |A|·|B| full-state
	// exchanges at once.
	rand.Shuffle(len(gone), func(i, j int) { gone[i], gone[j] = gone[j], gone[i] })
	targets := gone[:min(len(gone), rejoinPeersPerRound)]
	if others == 0 {
		targets = append(targets, seeds...)
	}
	slices.Sort(targets)
	targets = slices.Compact(targets)
	targets = slices.DeleteFunc(targets, func(a string) bool { return a == "" || a == selfAddr })
	if len(targets) == 0 {
		return
	}

	var (
		wg      sync.WaitGroup
		sem     = make(chan struct{}, rejoinParallelism)
		mu      sync.Mutex
		reached []string
	)
loop:
	for _, addr := range targets {
		select {
		case <-m.stop:
			break loop
		case sem <- struct{}{}:
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if _, err := m.list.Join([]string{addr}); err != nil {
				m.log.Debug("rejoin failed", "addr", addr, "err", err)
				return
			}
			mu.Lock()
			reached = append(reached, addr)
			mu.Unlock()
		}()
	}
	wg.Wait()
	// Debug only: a peer that left but still runs answers every round.
	// Real recoveries show up as "member joined".
	m.log.Debug("rejoin round", "reached", reached, "tried", targets)
}

// forget drops dead/left peers that memberlist no longer knows (not in live,
// a snapshot from current) and that have been gone for longer than
// ForgetAfter.
func (m *Membership) forget(live map[string]Member) {
	if m.cfg.ForgetAfter < 0 {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for name, p := range m.peers {
		if _, known := live[name]; known || name == m.cfg.NodeName {
			continue
		}
		if (p.State == StateDead || p.State == StateLeft) && time.Since(p.Since) > m.cfg.ForgetAfter {
			delete(m.peers, name)
			m.log.Info("forgot peer", "peer", name, "state", p.State, "since", p.Since)
		}
	}
}

// delegate implements memberlist's Delegate, EventDelegate and
// AliveDelegate. memberlist calls the event and alive methods while holding
// its node lock: they must not call back into memberlist.
type delegate struct{ m *Membership }

func (d *delegate) NodeMeta(limit int) []byte {
	d.m.metaMu.RLock()
	defer d.m.metaMu.RUnlock()
	if len(d.m.metaBytes) > limit { // cannot happen: Encode checks MetaMaxSize
		return nil
	}
	return bytes.Clone(d.m.metaBytes)
}

func (d *delegate) NotifyMsg([]byte)                           {}
func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (d *delegate) LocalState(join bool) []byte                { return nil }
func (d *delegate) MergeRemoteState(buf []byte, join bool)     {}

// NotifyAlive keeps out nodes whose meta is not a Verbund Meta.
func (d *delegate) NotifyAlive(peer *memberlist.Node) error {
	if _, err := DecodeMeta(peer.Meta); err != nil {
		return fmt.Errorf("node %s: %w", peer.Name, err)
	}
	return nil
}

func (d *delegate) NotifyJoin(n *memberlist.Node)   { d.m.observe(n, evJoin) }
func (d *delegate) NotifyLeave(n *memberlist.Node)  { d.m.observe(n, evLeave) }
func (d *delegate) NotifyUpdate(n *memberlist.Node) { d.m.observe(n, evUpdate) }

type eventKind int

const (
	evJoin eventKind = iota
	evLeave
	evUpdate
)

func (k eventKind) String() string {
	return [...]string{"join", "leave", "update"}[k]
}

// observe records a memberlist event (called with memberlist's node lock
// held) and queues it for the handler.
func (m *Membership) observe(n *memberlist.Node, kind eventKind) {
	st, since := StateAlive, time.Now()
	if kind == evLeave {
		st = StateDead
	}
	if mlLayout.ok {
		s, c := nodeStateOf(n)
		st, since = stateFrom(s), c
	}
	mem := m.member(n, st, since)
	m.mu.Lock()
	m.peers[n.Name] = mem
	m.mu.Unlock()

	self := n.Name == m.cfg.NodeName
	attrs := []any{"peer", n.Name, "addr", mem.GossipAddr, "role", mem.Role}
	switch {
	case self:
		m.log.Debug("local node event", "kind", kind, "state", st)
	case kind == evJoin:
		m.log.Info("member joined", attrs...)
	case kind == evUpdate:
		m.log.Info("member updated", attrs...)
	case st == StateLeft:
		m.log.Info("member left", attrs...)
	default:
		m.log.Warn("member failed", attrs...)
	}
	if m.events != nil {
		m.events.push(event{kind: kind, member: mem})
	}
}

type event struct {
	kind   eventKind
	member Member
}

// dispatcher delivers events to the handler in order from one goroutine, so
// that handlers never run inside memberlist's lock.
type dispatcher struct {
	h      EventHandler
	mu     sync.Mutex
	queue  []event
	closed bool
	wake   chan struct{}
	done   chan struct{}
	exited chan struct{}
}

func newDispatcher(h EventHandler) *dispatcher {
	d := &dispatcher{h: h, wake: make(chan struct{}, 1), done: make(chan struct{}), exited: make(chan struct{})}
	go d.run()
	return d
}

func (d *dispatcher) push(e event) {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return
	}
	d.queue = append(d.queue, e)
	d.mu.Unlock()
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

func (d *dispatcher) run() {
	defer close(d.exited)
	for {
		select {
		case <-d.done:
			return
		case <-d.wake:
		}
		for {
			d.mu.Lock()
			batch := d.queue
			d.queue = nil
			d.mu.Unlock()
			if len(batch) == 0 {
				break
			}
			for _, e := range batch {
				select {
				case <-d.done:
					return
				default:
				}
				switch e.kind {
				case evJoin:
					d.h.MemberJoin(e.member)
				case evLeave:
					d.h.MemberLeave(e.member)
				case evUpdate:
					d.h.MemberUpdate(e.member)
				}
			}
		}
	}
}

// close stops delivery (pending events are dropped) and waits for the
// goroutine to end.
func (d *dispatcher) close() {
	d.mu.Lock()
	d.closed = true
	d.mu.Unlock()
	close(d.done)
	<-d.exited
}
