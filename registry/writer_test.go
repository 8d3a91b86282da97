package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
)

// countingApplier counts the log entries and commands proposed to raft.
type countingApplier struct {
	next     Applier
	entries  atomic.Int64
	commands atomic.Int64
}

func (c *countingApplier) Apply(b []byte, timeout time.Duration) raft.ApplyFuture {
	e := &registryv1.LogEntry{}
	if err := proto.Unmarshal(b, e); err == nil {
		c.entries.Add(1)
		c.commands.Add(int64(len(e.GetSignedCommands())))
	}
	return c.next.Apply(b, timeout)
}

// newRaftNode starts a single-node raft cluster over fsm and waits until it
// leads.
func newRaftNode(t testing.TB, fsm raft.FSM) *raft.Raft {
	t.Helper()
	conf := raft.DefaultConfig()
	conf.LocalID = "n1"
	conf.HeartbeatTimeout = 50 * time.Millisecond
	conf.ElectionTimeout = 50 * time.Millisecond
	conf.LeaderLeaseTimeout = 50 * time.Millisecond
	conf.CommitTimeout = 5 * time.Millisecond
	conf.LogOutput = io.Discard
	store := raft.NewInmemStore()
	snaps := raft.NewInmemSnapshotStore()
	addr, trans := raft.NewInmemTransport("")
	if err := raft.BootstrapCluster(conf, store, store, snaps, trans, raft.Configuration{
		Servers: []raft.Server{{ID: conf.LocalID, Address: addr}},
	}); err != nil {
		t.Fatal(err)
	}
	r, err := raft.NewRaft(conf, fsm, store, store, snaps, trans)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Shutdown().Error() })
	deadline := time.Now().Add(10 * time.Second)
	for r.State() != raft.Leader {
		if time.Now().After(deadline) {
			t.Fatal("no leader")
		}
		time.Sleep(5 * time.Millisecond)
	}
	return r
}

func mustParse(t testing.TB, raw string) *SignedCommand {
	t.Helper()
	sc, err := ParseCommand(raw)
	if err != nil {
		t.Fatal(err)
	}
	return sc
}

func TestWriterGroupCommit(t *testing.T) {
	h := newHarness(t)
	r := newRaftNode(t, h.fsm)
	app := &countingApplier{next: r}
	w := NewWriter(app, WriterConfig{Logger: discardLogger()})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go w.Run(ctx)

	// Genesis through the writer; the writer stamps the wall clock, so
	// commands are issued now.
	op := newTestOrg(t, operatorRecord())
	gen := NewCommand(operatorID, mPutOrg(op.rec))
	res, idx, err := w.Submit(ctx, []*SignedCommand{mustParse(t, signCmd(t, gen, op.key))})
	if err != nil || len(res) != 1 || res[0].GetErrorCode() != "" || res[0].GetIndex() != idx {
		t.Fatalf("genesis: %v %v %d", err, res, idx)
	}

	// 200 concurrent submissions; every third carries two commands.
	const submits = 200
	type submission struct {
		cmds []*SignedCommand
		res  []*registryv1.CommandResult
		idx  uint64
		err  error
	}
	subs := make([]*submission, submits)
	n := 0
	for i := range subs {
		s := &submission{}
		for j := 0; j < 1+btoi(i%3 == 0); j++ {
			leika := fmt.Sprintf("99%012d", 1000+n)
			n++
			cmd := NewCommand(operatorID, mPutService(service(leika, "Leistung "+leika, nil, nil)))
			s.cmds = append(s.cmds, mustParse(t, signCmd(t, cmd, op.key)))
		}
		subs[i] = s
	}
	entriesBefore := app.entries.Load()
	start := make(chan struct{})
	var wg sync.WaitGroup
	for _, s := range subs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			defer cancel()
			s.res, s.idx, s.err = w.Submit(ctx, s.cmds)
		}()
	}
	close(start)
	wg.Wait()

	entries := app.entries.Load() - entriesBefore
	seenIdx := map[uint64]bool{}
	for i, s := range subs {
		if s.err != nil {
			t.Fatalf("submit %d: %v", i, s.err)
		}
		if len(s.res) != len(s.cmds) {
			t.Fatalf("submit %d: %d results for %d commands", i, len(s.res), len(s.cmds))
		}
		for j, r := range s.res {
			if r.GetCommandId() != s.cmds[j].Command.GetId() {
				t.Fatalf("submit %d result %d is for command %s, want %s", i, j, r.GetCommandId(), s.cmds[j].Command.GetId())
			}
			if r.GetErrorCode() != "" || r.GetDuplicate() || r.GetIndex() != s.idx {
				t.Fatalf("submit %d result %d: %v (index %d)", i, j, r, s.idx)
			}
			leika := s.cmds[j].Command.GetMutations()[0].GetPutService().GetLeikaKey()
			if got := getService(t, h.r, leika); IndexOfRevision(got.GetRevision()) != s.idx {
				t.Fatalf("service %s at revision %d, want %d", leika, got.GetRevision(), s.idx)
			}
		}
		seenIdx[s.idx] = true
	}
	// Every command was applied exactly once: one dedupe record each.
	dump := dumpState(t, h.db)
	if got := len(keysWithPrefix(dump, pCmd+operatorID+"/")); got != n+1 {
		t.Fatalf("%d dedupe records, want %d", got, n+1)
	}
	if got := len(keysWithPrefix(dump, pService)); got != n {
		t.Fatalf("%d services, want %d", got, n)
	}
	if app.commands.Load() != int64(n+1) {
		t.Fatalf("%d commands proposed, want %d", app.commands.Load(), n+1)
	}
	t.Logf("%d commands in %d submits went into %d log entries", n, submits, entries)
	if entries != int64(len(seenIdx)) {
		t.Fatalf("%d entries proposed, results name %d indexes", entries, len(seenIdx))
	}
	// Without group commit every submit is an entry of its own (200). How
	// many submits share an entry depends on scheduling: on a loaded 2-core
	// CI machine 68 entries were seen, so the bound is half the submits.
	if entries > submits/2 {
		t.Fatalf("%d log entries for %d submits: no group commit", entries, submits)
	}

	// A retry returns the original result.
	s := subs[7]
	res, idx, err = w.Submit(ctx, s.cmds)
	if err != nil || !res[0].GetDuplicate() || res[0].GetIndex() != s.idx || idx == s.idx {
		t.Fatalf("retry: %v, %v at %d", err, res, idx)
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// fakeApplier answers proposals like a leader whose FSM succeeds every
// command, or fails with err / a canned response.
type fakeApplier struct {
	mu      sync.Mutex
	entries [][]string
	err     error
	resp    func(e *registryv1.LogEntry) interface{}
	block   chan struct{} // if set, futures wait for it
}

type fakeFuture struct {
	err   error
	resp  interface{}
	block chan struct{}
}

func (f fakeFuture) Error() error {
	if f.block != nil {
		<-f.block
	}
	return f.err
}
func (f fakeFuture) Index() uint64         { return 0 }
func (f fakeFuture) Response() interface{} { return f.resp }

func (a *fakeApplier) Apply(b []byte, _ time.Duration) raft.ApplyFuture {
	e := &registryv1.LogEntry{}
	if err := proto.Unmarshal(b, e); err != nil {
		panic(err)
	}
	a.mu.Lock()
	a.entries = append(a.entries, e.GetSignedCommands())
	index := uint64(len(a.entries))
	a.mu.Unlock()
	if a.err != nil {
		return fakeFuture{err: a.err, block: a.block}
	}
	if a.resp != nil {
		return fakeFuture{resp: a.resp(e), block: a.block}
	}
	lr := &LogResult{Index: index}
	for _, raw := range e.GetSignedCommands() {
		sc, err := ParseCommand(raw)
		if err != nil {
			panic(err)
		}
		lr.Results = append(lr.Results, &registryv1.CommandResult{CommandId: sc.Command.GetId(), Index: index})
	}
	return fakeFuture{resp: lr, block: a.block}
}

// queued submits each command set from its own goroutine and waits until all
// are queued in w (Run not started yet).
func queued(t *testing.T, w *Writer, sets [][]*SignedCommand) func() []error {
	t.Helper()
	errs := make([]error, len(sets))
	var wg sync.WaitGroup
	for i, cmds := range sets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, _, err := w.Submit(context.Background(), cmds)
			if err == nil {
				for j, r := range res {
					if r.GetCommandId() != cmds[j].Command.GetId() {
						err = fmt.Errorf("result %d is for %s, want %s", j, r.GetCommandId(), cmds[j].Command.GetId())
					}
				}
			}
			errs[i] = err
		}()
		// Queue in order, so the entry boundaries are predictable.
		for deadline := time.Now().Add(5 * time.Second); len(w.queue) != i+1; {
			if time.Now().After(deadline) {
				t.Fatal("submission not queued")
			}
			time.Sleep(time.Millisecond)
		}
	}
	return func() []error { wg.Wait(); return errs }
}

func TestWriterBatching(t *testing.T) {
	k, _ := newSigningKey(t, "k")
	cmd := func() *SignedCommand {
		return mustParse(t, signCmd(t, NewCommand(arsMuni, mDeleteOffering("abc:def")), k))
	}
	size := len(cmd().Raw)
	tests := []struct {
		name        string
		maxBytes    int
		sets        []int // commands per submission
		wantEntries []int // commands per entry
	}{
		{name: "all queued go into one entry", maxBytes: 100 * size, sets: []int{1, 1, 2, 1, 3}, wantEntries: []int{8}},
		{name: "split at the byte limit", maxBytes: 2*size + size/2, sets: []int{1, 1, 1, 1, 1}, wantEntries: []int{2, 2, 1}},
		{name: "a submission is never split", maxBytes: 3*size + size/2, sets: []int{2, 2, 2, 1}, wantEntries: []int{2, 2, 3}},
		{name: "oversized submission alone", maxBytes: size + size/2, sets: []int{1, 3, 1}, wantEntries: []int{1, 3, 1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			app := &fakeApplier{}
			w := NewWriter(app, WriterConfig{MaxEntryBytes: tc.maxBytes, Logger: discardLogger()})
			var sets [][]*SignedCommand
			for _, n := range tc.sets {
				var s []*SignedCommand
				for range n {
					s = append(s, cmd())
				}
				sets = append(sets, s)
			}
			wait := queued(t, w, sets)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			go w.Run(ctx)
			for i, err := range wait() {
				if err != nil {
					t.Fatalf("submit %d: %v", i, err)
				}
			}
			var got []int
			for _, e := range app.entries {
				got = append(got, len(e))
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.wantEntries) {
				t.Fatalf("entries of %v commands, want %v", got, tc.wantEntries)
			}
		})
	}
}

func TestWriterErrors(t *testing.T) {
	k, _ := newSigningKey(t, "k")
	cmds := func(n int) []*SignedCommand {
		var out []*SignedCommand
		for range n {
			out = append(out, mustParse(t, signCmd(t, NewCommand(arsMuni, mDeleteOffering("abc:def")), k)))
		}
		return out
	}
	tests := []struct {
		name string
		app  *fakeApplier
		ctx  func() context.Context
		want error
	}{
		{name: "not leader", app: &fakeApplier{err: raft.ErrNotLeader}, want: ErrNotLeader},
		{name: "enqueue timeout", app: &fakeApplier{err: raft.ErrEnqueueTimeout}, want: ErrUnavailable},
		{name: "leadership lost", app: &fakeApplier{err: raft.ErrLeadershipLost}, want: ErrIndeterminate},
		{name: "shutdown", app: &fakeApplier{err: raft.ErrRaftShutdown}, want: ErrIndeterminate},
		{name: "unexpected response", app: &fakeApplier{resp: func(*registryv1.LogEntry) interface{} { return errors.New("x") }}, want: ErrIndeterminate},
		{name: "short response", app: &fakeApplier{resp: func(*registryv1.LogEntry) interface{} { return &LogResult{Index: 1} }}, want: ErrIndeterminate},
		{
			name: "context ends while waiting",
			app:  &fakeApplier{block: make(chan struct{})},
			ctx: func() context.Context {
				ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
				t.Cleanup(cancel)
				return ctx
			},
			want: ErrIndeterminate,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := NewWriter(tc.app, WriterConfig{Logger: discardLogger()})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			go w.Run(ctx)
			if tc.app.block != nil {
				defer close(tc.app.block)
			}
			sctx := context.Background()
			if tc.ctx != nil {
				sctx = tc.ctx()
			}
			res, _, err := w.Submit(sctx, cmds(2))
			if !errors.Is(err, tc.want) {
				t.Fatalf("error %v, want %v", err, tc.want)
			}
			if res != nil {
				t.Fatalf("results %v with an error", res)
			}
		})
	}
	t.Run("nothing to submit", func(t *testing.T) {
		w := NewWriter(&fakeApplier{}, WriterConfig{})
		if res, idx, err := w.Submit(context.Background(), nil); res != nil || idx != 0 || err != nil {
			t.Fatalf("%v %d %v", res, idx, err)
		}
	})
}
