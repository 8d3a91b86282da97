package registry

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"github.com/verbund/verbund/keys"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
)

// LogResult is what FSM.Apply returns for one Raft log entry: one result per
// signed command in the entry, in order.
type LogResult struct {
	Index   uint64
	Results []*registryv1.CommandResult
}

// FSMConfig tunes the state machine. Every replica must use the same
// ReplayWindow and MaxClockSkew: they take part in deterministic decisions.
type FSMConfig struct {
	// Commands issued longer ago than this (relative to the leader's clock
	// when proposed) are refused, which bounds how long dedupe records live.
	ReplayWindow time.Duration
	// Commands issued further in the future than this are refused.
	MaxClockSkew time.Duration
	// Parallel signature checks per batch; default GOMAXPROCS.
	VerifyWorkers int
	Logger        *slog.Logger
	// FeedRetention is how many log indexes of change feed the state keeps
	// (older watchers get a snapshot first). Part of the deterministic state.
	FeedRetention uint64
	// FeedRetentionBytes also bounds the change feed by the encoded bytes
	// of its entries (0: no bound; default 64 MiB): bulk entries of 1,000
	// commands made 100,000 entries a second copy of a national registry.
	// Part of the deterministic state.
	FeedRetentionBytes uint64
}

// DefaultFSMConfig returns the production settings.
func DefaultFSMConfig() FSMConfig {
	return FSMConfig{ReplayWindow: 24 * time.Hour, MaxClockSkew: 5 * time.Minute, FeedRetention: 100000, FeedRetentionBytes: 64 << 20}
}

// FSM is the registry state machine. It implements raft.BatchingFSM: Raft
// calls Apply/ApplyBatch, Snapshot and Restore from a single goroutine. Reads
// (queries) run concurrently against badger's MVCC snapshots.
//
// The state is persistent: every batch is committed to badger together with
// the index of its last log, so entries that Raft replays after a restart
// are recognised and skipped. Badger writes are not synced individually: the
// Raft log is the durable copy, and Snapshot syncs badger before Raft may
// compact the log.
type FSM struct {
	db  *badger.DB
	cfg FSMConfig
	log *slog.Logger

	applied  atomic.Uint64
	mu       sync.Mutex
	appliedC chan struct{} // closed when applied advances

	verified verifyCache
	parsed   parsedCache // commands this node's admission parsed, for ApplyBatch
}

var _ raft.BatchingFSM = (*FSM)(nil)

// NewFSM opens the state machine over db, resuming at its last applied index.
func NewFSM(db *badger.DB, cfg FSMConfig) (*FSM, error) {
	d := DefaultFSMConfig()
	if cfg.ReplayWindow <= 0 {
		cfg.ReplayWindow = d.ReplayWindow
	}
	if cfg.MaxClockSkew <= 0 {
		cfg.MaxClockSkew = d.MaxClockSkew
	}
	if cfg.FeedRetention == 0 {
		cfg.FeedRetention = d.FeedRetention
	}
	if cfg.VerifyWorkers <= 0 {
		cfg.VerifyWorkers = runtime.GOMAXPROCS(0)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	f := &FSM{db: db, cfg: cfg, log: cfg.Logger, appliedC: make(chan struct{})}
	f.verified.init(1 << 16)
	f.parsed.init(1 << 15)
	applied, err := NewReader(db).view(func(*stage) error { return nil })
	if err != nil {
		return nil, fmt.Errorf("read applied index: %w", err)
	}
	f.applied.Store(applied)
	return f, nil
}

// DB returns the badger database holding the state (read-only use).
func (f *FSM) DB() *badger.DB { return f.db }

// AppliedIndex is the index of the last log entry reflected in the state.
func (f *FSM) AppliedIndex() uint64 { return f.applied.Load() }

// WaitApplied blocks until the state reflects index, or ctx ends.
func (f *FSM) WaitApplied(ctx context.Context, index uint64) error {
	for {
		f.mu.Lock()
		c := f.appliedC
		f.mu.Unlock()
		if f.applied.Load() >= index {
			return nil
		}
		select {
		case <-c:
		case <-ctx.Done():
			return fmt.Errorf("wait for index %d (applied %d): %w", index, f.applied.Load(), ctx.Err())
		}
	}
}

func (f *FSM) setApplied(index uint64) {
	f.applied.Store(index)
	f.mu.Lock()
	close(f.appliedC)
	f.appliedC = make(chan struct{})
	f.mu.Unlock()
}

// Apply applies one log entry.
func (f *FSM) Apply(l *raft.Log) interface{} { return f.ApplyBatch([]*raft.Log{l})[0] }

// Txn size budget: badger refuses a transaction above ~15% of the memtable
// size; stay well below and commit between log entries.
const (
	txnMaxBytes   = 4 << 20
	txnMaxEntries = 40000
)

type pending struct {
	sc   *SignedCommand
	err  error                 // parse error (final)
	key  *registryv1.PublicKey // the key verified in the parallel phase, if done
	at   keys.Moment           // the log's index and proposed time: key validity is judged at it
	done bool                  // verified against key
}

// ApplyBatch applies a batch of committed log entries: signatures are
// verified in parallel against the state at the start of the batch, then the
// commands are applied in log order, each judged against the state its
// predecessors left (a command whose key differs from the one verified in
// the parallel phase is verified again).
func (f *FSM) ApplyBatch(logs []*raft.Log) []interface{} {
	out := make([]interface{}, len(logs))
	applied := f.applied.Load()

	entries := make([]*registryv1.LogEntry, len(logs))
	var all []*pending
	perLog := make([][]*pending, len(logs))
	for i, l := range logs {
		if l.Index <= applied || l.Type != raft.LogCommand {
			continue
		}
		e := &registryv1.LogEntry{}
		if err := proto.Unmarshal(l.Data, e); err != nil {
			f.log.Error("undecodable log entry skipped", "index", l.Index, "err", err)
			continue
		}
		entries[i] = e
		for _, raw := range e.GetSignedCommands() {
			p := &pending{at: keys.Moment{Index: l.Index, UnixMs: e.GetProposedAtUnixMs()}}
			p.sc, p.err = f.parseCommandOnce(raw)
			perLog[i] = append(perLog[i], p)
			all = append(all, p)
		}
	}

	txn := f.db.NewTransaction(true)
	defer func() { txn.Discard() }()
	f.verifyAll(newStage(nil, txn), all)

	txnBytes, txnEntries := 0, 0
	last := applied
	for i, l := range logs {
		if l.Index <= applied {
			continue
		}
		ls := newStage(nil, txn)
		if entries[i] != nil {
			res := &LogResult{Index: l.Index}
			if lv := entries[i].GetRaiseFeatureLevel(); lv != 0 {
				f.raiseFeatureLevel(ls, l.Index, lv)
			}
			var seq uint64 // entity changes in this entry: unique revisions
			for _, p := range perLog[i] {
				r := f.applyCommand(ls, p, l.Index, entries[i].GetProposedAtUnixMs(), &seq)
				res.Results = append(res.Results, r)
			}
			f.pruneDedupe(ls, entries[i].GetProposedAtUnixMs())
			if err := f.recordFeed(ls, l.Index); err != nil {
				f.fatal(err)
			}
			out[i] = res
		}
		ls.set([]byte(keyApplied), u64(l.Index))
		b, n := ls.size()
		if txnEntries > 0 && (txnBytes+b > txnMaxBytes || txnEntries+n > txnMaxEntries) {
			if err := f.commit(txn, last); err != nil {
				f.fatal(err)
			}
			txn = f.db.NewTransaction(true)
			txnBytes, txnEntries = 0, 0
			ls.txn = txn
		}
		if err := ls.flush(txn); errors.Is(err, badger.ErrTxnTooBig) {
			// One entry larger than a transaction: write it in pieces, the
			// applied index last, so a crash replays the entry.
			f.log.Warn("log entry exceeds one badger transaction; writing in parts", "index", l.Index, "writes", n)
			txn.Discard()
			if err := f.flushLarge(ls); err != nil {
				f.fatal(err)
			}
			txn = f.db.NewTransaction(true)
			txnBytes, txnEntries = 0, 0
		} else if err != nil {
			f.fatal(err)
		} else {
			txnBytes += b
			txnEntries += n
		}
		last = l.Index
	}
	if last > applied {
		if err := f.commit(txn, last); err != nil {
			f.fatal(err)
		}
	}
	return out
}

func (f *FSM) commit(txn *badger.Txn, last uint64) error {
	if err := txn.Commit(); err != nil {
		return fmt.Errorf("commit applied state up to %d: %w", last, err)
	}
	f.setApplied(last)
	return nil
}

func (f *FSM) flushLarge(ls *stage) error {
	wb := f.db.NewWriteBatch()
	defer wb.Cancel()
	var appliedVal []byte
	for _, k := range ls.order {
		v := ls.writes[k]
		if k == keyApplied {
			appliedVal = v
			continue
		}
		var err error
		if v == nil {
			err = wb.Delete([]byte(k))
		} else {
			err = wb.Set([]byte(k), v)
		}
		if err != nil {
			return err
		}
	}
	if err := wb.Flush(); err != nil {
		return err
	}
	if err := f.db.Update(func(txn *badger.Txn) error { return txn.Set([]byte(keyApplied), appliedVal) }); err != nil {
		return err
	}
	f.setApplied(binary.BigEndian.Uint64(appliedVal))
	return nil
}

// fatal stops the process: a state machine that cannot persist an applied
// entry must not keep answering as if it had.
func (f *FSM) fatal(err error) {
	f.log.Error("registry state machine cannot persist; stopping", "err", err)
	panic(fmt.Sprintf("registry FSM: %v", err))
}

// verifyAll checks signatures of all parsed commands in parallel, against
// the state at the start of the batch. It only prepares: applyCommand
// decides every command against the state at its own position.
func (f *FSM) verifyAll(st *stage, all []*pending) {
	var todo []*pending
	orgs := map[string]*registryv1.Organisation{}
	op, err := st.get([]byte(keyOperator))
	if err != nil {
		return // decided during apply
	}
	for _, p := range all {
		if p.err != nil {
			continue
		}
		org, err := f.lookupOrg(st, orgs, p.sc.Command.GetIssuer())
		if err != nil {
			continue
		}
		if p.key, err = commandKey(org, string(op), p.sc, p.at); err == nil {
			todo = append(todo, p)
		}
	}
	work := make(chan *pending)
	var wg sync.WaitGroup
	n := min(f.cfg.VerifyWorkers, len(todo))
	for w := 0; w < n; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := range work {
				p.done = f.verify(p.sc, p.key) == nil
			}
		}()
	}
	for _, p := range todo {
		work <- p
	}
	close(work)
	wg.Wait()
}

func (f *FSM) lookupOrg(st *stage, cache map[string]*registryv1.Organisation, id string) (*registryv1.Organisation, error) {
	if o, ok := cache[id]; ok {
		return o, nil
	}
	o := &registryv1.Organisation{}
	ok, err := st.getProto(orgKey(id), o)
	if err != nil {
		return nil, err
	}
	if !ok {
		o = nil
	}
	cache[id] = o
	return o, nil
}

// verify checks sc against pk, consulting the cache of signatures this
// process already verified with the same key (at the API edge).
func (f *FSM) verify(sc *SignedCommand, pk *registryv1.PublicKey) error {
	if f.verified.has(sc.Digest, pk.GetJwkJson()) {
		return nil
	}
	k, err := parseKey(pk)
	if err != nil {
		return err
	}
	if err := sc.Verify(k); err != nil {
		return err
	}
	f.verified.add(sc.Digest, pk.GetJwkJson())
	return nil
}

// PreVerify verifies a command's signature against the local state, as the
// API does before proposing. A success is remembered so the FSM on this node
// does not verify the same bytes with the same key again.
func (f *FSM) PreVerify(sc *SignedCommand) error {
	txn := f.db.NewTransaction(false)
	defer txn.Discard()
	st := newStage(nil, txn)
	org, err := loadOrg(st, sc.Command.GetIssuer())
	if err != nil {
		return err
	}
	op, err := st.get([]byte(keyOperator))
	if err != nil {
		return err
	}
	pk, err := commandKey(org, string(op), sc, keys.Now(time.Now()))
	if err != nil {
		return err
	}
	return f.verify(sc, pk)
}

func (f *FSM) applyCommand(ls *stage, p *pending, index uint64, proposedAt int64, seq *uint64) *registryv1.CommandResult {
	res := &registryv1.CommandResult{Index: index}
	fail := func(err error) *registryv1.CommandResult {
		res.ErrorCode, res.ErrorMessage = ErrorCode(err), err.Error()
		return res
	}
	if p.sc != nil {
		res.CommandId = p.sc.Command.GetId()
	}
	if p.err != nil {
		return fail(p.err)
	}
	cmd := p.sc.Command
	opBytes, err := ls.get([]byte(keyOperator))
	if err != nil {
		return fail(err)
	}
	org, err := loadOrg(ls, cmd.GetIssuer())
	if err != nil {
		return fail(err)
	}
	// Judged against the state this command sees (earlier commands of the
	// batch may have registered the issuer, rotated its keys, approved or
	// suspended it); the parallel phase only saved the signature check when
	// it verified the same key.
	pk, err := commandKey(org, string(opBytes), p.sc, keys.Moment{Index: index, UnixMs: proposedAt})
	if err != nil {
		return fail(err)
	}
	if !p.done || p.key.GetJwkJson() != pk.GetJwkJson() {
		if err := f.verify(p.sc, pk); err != nil {
			return fail(err)
		}
	}
	// Idempotency: a command id is applied once per issuer. Checked after
	// the signature, so only an authentic command learns the earlier result.
	// A reuse of the id for other content is refused, and the record of
	// the first command stays.
	digest, err := CommandDigest(cmd)
	if err != nil {
		return fail(err)
	}
	prev := &registryv1.CommandResult{}
	if ok, err := ls.getProto(cmdKey(cmd.GetIssuer(), cmd.GetId()), prev); err != nil {
		return fail(err)
	} else if ok {
		if err := sameCommand(prev, digest); err != nil {
			return fail(err)
		}
		prev.Duplicate = true
		return prev
	}
	res.CommandSha256 = digest
	if cmd.GetIssuedAtUnixMs() < proposedAt-f.cfg.ReplayWindow.Milliseconds() {
		return fail(fmt.Errorf("%w: command %s was issued more than %v before it was proposed", ErrStale, cmd.GetId(), f.cfg.ReplayWindow))
	}
	if cmd.GetIssuedAtUnixMs() > proposedAt+f.cfg.MaxClockSkew.Milliseconds() {
		return fail(fmt.Errorf("%w: command %s is issued in the future (clock skew over %v)", ErrInvalidArgument, cmd.GetId(), f.cfg.MaxClockSkew))
	}
	// The version gate: a kind the cluster's recorded feature level does
	// not cover is refused on every replica alike (not stored as a dedupe
	// record: the same command succeeds once the level is raised).
	level, err := featureLevel(ls)
	if err != nil {
		return fail(err)
	}
	if err := checkFeatureLevel(cmd, level); err != nil {
		return fail(err)
	}
	cs := newStage(ls, nil)
	// A failed command's revisions are not reused: harmless gaps, and the
	// counter stays the same on every replica.
	a := &applyCtx{st: cs, index: index, issuer: org, cmd: cmd, kid: p.sc.KID, operator: string(opBytes), seq: seq}
	revs := make([]uint64, 0, len(cmd.GetMutations()))
	for i, m := range cmd.GetMutations() {
		a.rev = 0
		if err := a.apply(m); err != nil {
			// Record the failure so a retry gets the same answer, but keep
			// none of the command's changes.
			fail(fmt.Errorf("mutation %d: %w", i, err))
			f.storeResult(ls, cmd, res)
			return res
		}
		revs = append(revs, a.rev)
		if a.operator == "" {
			if op, _ := cs.get([]byte(keyOperator)); op != nil {
				// Genesis registered the issuer: judge the rest of the
				// command as the operator's (org is nil here).
				a.operator = string(op)
				a.issuer = &registryv1.Organisation{}
				if ok, _ := cs.getProto(orgKey(cmd.GetIssuer()), a.issuer); !ok {
					a.issuer = nil
				}
			}
		}
	}
	if err := recordCommand(ls, cs, p.sc, index, revs, seq); err != nil {
		return fail(err)
	}
	cs.merge()
	res.Revisions = revs
	f.storeResult(ls, cmd, res)
	return res
}

func (f *FSM) storeResult(ls *stage, cmd *registryv1.Command, res *registryv1.CommandResult) {
	_ = ls.setProto(cmdKey(cmd.GetIssuer(), cmd.GetId()), res)
	ls.set(cmdExpiryKey(cmd.GetIssuedAtUnixMs(), cmd.GetIssuer(), cmd.GetId()), nil)
}

// pruneDedupe drops dedupe records of commands that fell out of the replay
// window: such commands are refused as stale anyway. Deterministic, as it
// depends only on the log's proposed time.
func (f *FSM) pruneDedupe(ls *stage, proposedAt int64) {
	cutoff := proposedAt - f.cfg.ReplayWindow.Milliseconds() - time.Minute.Milliseconds()
	if cutoff <= 0 {
		return
	}
	it := ls.txn.NewIterator(badger.IteratorOptions{Prefix: []byte(pCmdExpiry)})
	defer it.Close()
	n := 0
	for it.Rewind(); it.Valid() && n < 1000; it.Next() {
		key := it.Item().KeyCopy(nil)
		rest := key[len(pCmdExpiry):]
		if len(rest) < 9 || int64(binary.BigEndian.Uint64(rest[:8])) >= cutoff {
			break
		}
		ls.del(key)
		ls.del(append([]byte(pCmd), rest[9:]...))
		n++
	}
}

// verifyCache remembers (digest, key) pairs whose signature this process
// verified, bounded in size.
type verifyCache struct {
	mu  sync.Mutex
	max int
	m   map[[32]byte]string
}

func (c *verifyCache) init(max int) { c.max, c.m = max, make(map[[32]byte]string) }

func (c *verifyCache) has(d [32]byte, key string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.m[d]
	return ok && v == key
}

func (c *verifyCache) add(d [32]byte, key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= c.max {
		clear(c.m)
	}
	c.m[d] = key
}

// LookupResult returns the stored result of an already applied command, or
// nil. A hit is final (dedupe records only exist for applied commands), so
// the API answers retries from it without a trip through the log.
func (f *FSM) LookupResult(issuer, id string) (*registryv1.CommandResult, error) {
	txn := f.db.NewTransaction(false)
	defer txn.Discard()
	res := &registryv1.CommandResult{}
	ok, err := newStage(nil, txn).getProto(cmdKey(issuer, id), res)
	if err != nil || !ok {
		return nil, err
	}
	res.Duplicate = true
	return res, nil
}

// keyFeedBytes holds the encoded bytes of the change feed entries the
// state retains (feed bookkeeping: not replicated through the feed). A
// state from before it existed starts counting at 0 (and never below).
const keyFeedBytes = "m/feedbytes"

// maxFeedDrops bounds the feed entries one log entry drops, so that one
// apply never does unbounded work; the rest go with the next entries.
const maxFeedDrops = 1000

// recordFeed stores the state writes of the log entry at index as a change
// feed entry (dedupe bookkeeping left out), and drops feed entries that fell
// out of the retention: older than FeedRetention indexes, or beyond
// FeedRetentionBytes of encoded entries (the newest entry always stays).
// Deterministic: it depends on the index and the state only.
func (f *FSM) recordFeed(ls *stage, index uint64) error {
	e := &registryv1.FeedEntry{Index: index}
	for _, k := range ls.order {
		if !replicated(k) {
			continue
		}
		v := ls.writes[k]
		e.Writes = append(e.Writes, &registryv1.StateWrite{Key: []byte(k), Value: v, Delete: v == nil})
	}
	total, err := ls.getIndex(keyFeedBytes)
	if err != nil {
		return err
	}
	if len(e.Writes) > 0 {
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(e)
		if err != nil {
			return err
		}
		ls.set(feedKey(index), b)
		total += uint64(len(b))
		defer func() { ls.set([]byte(keyFeedBytes), u64(total)) }()
	}
	var cutoff uint64 // entries below it are dropped by count
	if index > f.cfg.FeedRetention {
		cutoff = index - f.cfg.FeedRetention
	}
	// The byte bound came with feature level 2: below it a server of the
	// previous version, which does not know it, may still apply the same
	// entries, and every replica must keep the same feed.
	level, err := featureLevel(ls)
	if err != nil {
		return err
	}
	byteBound := f.cfg.FeedRetentionBytes > 0 && level >= FeedBytesLevel
	overBytes := byteBound && total > f.cfg.FeedRetentionBytes
	start, err := ls.getIndex(keyFeedStart)
	if err != nil {
		return err
	}
	if start >= cutoff && !overBytes {
		return nil
	}
	it := ls.txn.NewIterator(badger.IteratorOptions{Prefix: []byte(pFeed)})
	defer it.Close()
	n := 0
	newStart := start
	// From the feed's start, not from the prefix's beginning: every entry
	// below start is gone, and the deletions stay behind as tombstones in
	// badger's tables until compaction reaches them. An iterator rewound to
	// the prefix steps over each of them (one per entry ever dropped), which
	// made a trim cost grow with the feed's history: 30 % of the leader's
	// CPU once the byte bound started dropping in make bench.
	for it.Seek(feedKey(start)); it.Valid(); it.Next() {
		idx := binary.BigEndian.Uint64(it.Item().Key()[len(pFeed):])
		if idx >= index || idx >= cutoff && !(byteBound && total > f.cfg.FeedRetentionBytes) {
			break
		}
		if n == maxFeedDrops {
			break
		}
		var size int
		if err := it.Item().Value(func(v []byte) error { size = len(v); return nil }); err != nil {
			return err
		}
		ls.del(it.Item().KeyCopy(nil))
		total -= min(total, uint64(size))
		newStart = idx // a reader after newStart misses nothing
		n++
	}
	if n < maxFeedDrops {
		newStart = max(newStart, cutoff) // all below the cutoff are gone
	}
	if newStart != start {
		ls.set([]byte(keyFeedStart), u64(newStart))
	}
	if n > 0 && len(e.Writes) == 0 {
		ls.set([]byte(keyFeedBytes), u64(total))
	}
	return nil
}
