package handover

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// Key layout (all keys start with "ho/", so the database may be shared):
//
//	ho/o/<id>               outboxRecord (handover or event we send)
//	ho/ot/<id>              its compact JWE
//	ho/oa/<seq>             id: outbox in creation order
//	ho/op/<id>              "": pending delivery (the deliverer's work list)
//	ho/i/<jti>              inboxRecord (a case handed over to us)
//	ho/ib/<jti>             caseBody: signed JWS, data, attachments
//	ho/ia/<seq>             jti: inbox in arrival order
//	ho/s/<jti>              seenRecord: the dedupe record of a delivered token
//	ho/d/<digest hex>       jti: dedupe by the exact envelope bytes
//	ho/e/<event jti>        eventRecord (an event about a handover we sent)
//	ho/he/<handover jti>/<event jti>  "": events received per sent handover
//	ho/t/<code>\x00<jti>    role ("out" | "in"): tracking code index
//	ho/r/<idempotency key>  sendResult of SendHandover
//	ho/a/<seq>              AuditEntry (seq: 8 bytes big endian)
//	ho/ap/<seq>             publishedHead: audit heads published to the registry
//	ho/cs                   commit sequence: write batches committed (highwater.go)
//	ho/st/<bucket>/<leika>/<counterpart>/<in|out>  statsCounters: hourly handover statistics (statsstore.go)
//
// <seq> is 8 bytes big endian.
const (
	pOutbox      = "ho/o/"
	pOutboxOrder = "ho/oa/"
	pPending     = "ho/op/"
	pInbox       = "ho/i/"
	pInboxOrder  = "ho/ia/"
	pSeen        = "ho/s/"
	pDigest      = "ho/d/"
	pEvent       = "ho/e/"
	pHandoverEv  = "ho/he/"
	pTrack       = "ho/t/"
	pRequest     = "ho/r/"
	pAudit       = "ho/a/"
	pPublished   = "ho/ap/"
)

func key(prefix string, parts ...string) []byte {
	b := []byte(prefix)
	for i, p := range parts {
		if i > 0 {
			b = append(b, '/')
		}
		b = append(b, p...)
	}
	return b
}

func seqKey(prefix string, seq uint64) []byte {
	b := make([]byte, len(prefix)+8)
	copy(b, prefix)
	binary.BigEndian.PutUint64(b[len(prefix):], seq)
	return b
}

func trackKey(code, jti string) []byte {
	b := []byte(pTrack)
	b = append(b, code...)
	b = append(b, 0)
	return append(b, jti...)
}

func trackPrefix(code string) []byte {
	b := []byte(pTrack)
	b = append(b, code...)
	return append(b, 0)
}

// errClosed is returned for work submitted after Close (an ErrUnavailable).
var errClosed = fmt.Errorf("%w: service closed", ErrUnavailable)

// op is one unit of work of the committer. fn runs on the committer
// goroutine; it reads through tx and buffers its writes there. Its writes
// are applied only if it returns nil, so fn may return an error at any
// point without leaving a trace.
type op struct {
	fn   func(tx *tx) error
	done chan error
}

// tx is the view an op gets: reads see everything committed and every
// earlier op of the same batch; writes are buffered until the op succeeds.
type tx struct {
	c      *committer
	txn    *badger.Txn
	writes []write
	audits []auditInput
	seqs   map[string]uint64 // sequence numbers taken by this op
	// actor is recorded in the audit entries this op writes (WithActor).
	actor string
}

type write struct {
	key   []byte
	value []byte
	del   bool
}

func (t *tx) get(k []byte) ([]byte, bool, error) {
	for i := len(t.writes) - 1; i >= 0; i-- {
		if bytes.Equal(t.writes[i].key, k) {
			if t.writes[i].del {
				return nil, false, nil
			}
			return t.writes[i].value, true, nil
		}
	}
	it, err := t.txn.Get(k)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	v, err := it.ValueCopy(nil)
	return v, err == nil, err
}

func (t *tx) getJSON(k []byte, v any) (bool, error) {
	b, ok, err := t.get(k)
	if err != nil || !ok {
		return ok, err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return false, fmt.Errorf("handover: decode %q: %w", k, err)
	}
	return true, nil
}

func (t *tx) set(k, v []byte) { t.writes = append(t.writes, write{key: k, value: v}) }

func (t *tx) setJSON(k []byte, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	t.set(k, b)
	return nil
}

func (t *tx) del(k []byte) { t.writes = append(t.writes, write{key: k, del: true}) }

// audit appends an audit entry when the op succeeds, in the same commit.
func (t *tx) audit(kind, id, digest, peer string) {
	t.audits = append(t.audits, auditInput{kind, id, digest, peer, t.actor})
}

// nextSeq returns the next number of the sequence stored under prefix
// (1-based, gap-free as long as ops succeed).
func (t *tx) nextSeq(prefix string) (uint64, error) {
	cur, ok := t.seqs[prefix]
	if !ok {
		var err error
		if cur, err = t.c.seq(t.txn, prefix); err != nil {
			return 0, err
		}
	}
	cur++
	if t.seqs == nil {
		t.seqs = map[string]uint64{}
	}
	t.seqs[prefix] = cur
	return cur, nil
}

// committer serialises every state change through one goroutine and
// commits them in batches: one badger transaction, one fsync, many ops
// (group commit). An op's done channel is signalled only after its batch is
// durable, so an answer that depends on an op is never given before the
// state it reports is on disk.
type committer struct {
	db       *badger.DB
	syncEach bool // the DB does not sync by itself: call db.Sync after commit
	now      func() time.Time
	ops      chan *op
	quit     chan struct{}
	stopped  chan struct{}
	maxBatch int

	// Owned by the committer goroutine (read by others under mu).
	mu   sync.Mutex
	head AuditHead
	seqs map[string]uint64 // last used number per sequence prefix
	// seqsView is the sequence state of the batch being built (committer
	// goroutine only).
	seqsView map[string]uint64
	stats    struct{ batches, ops uint64 }

	// commit is the commit sequence of the last durable batch; hw (nil for
	// an in-memory DB) records it outside badger (highwater.go).
	commit uint64
	hw     *highWater
	// hwCreated: the store had commits but no mark file (created now).
	hwCreated bool
	// faults is Config.faults (nil in production): the power-loss tests
	// copy the store at fpSynced and the control run skips fpSync.
	faults faults
}

func newCommitter(db *badger.DB, now func() time.Time, fp faults) (*committer, error) {
	c := &committer{
		db:       db,
		syncEach: !db.Opts().SyncWrites,
		now:      now,
		faults:   fp,
		ops:      make(chan *op, 1024),
		quit:     make(chan struct{}),
		stopped:  make(chan struct{}),
		maxBatch: 256,
		seqs:     map[string]uint64{},
	}
	head, err := loadAuditHead(db)
	if err != nil {
		return nil, err
	}
	c.head = head
	if c.commit, err = loadCommitSeq(db); err != nil {
		return nil, err
	}
	if opts := db.Opts(); !opts.InMemory && opts.Dir != "" {
		hw, recorded, exists, err := openHighWater(opts.Dir, c.commit)
		if err != nil {
			return nil, fmt.Errorf("%w (if the store itself is intact, delete %s to accept it as it is)", err, filepath.Join(opts.Dir, HighWaterFile))
		}
		if recorded > c.commit {
			_ = hw.close()
			return nil, fmt.Errorf("%w: %s holds commit %d, but %s records that commit %d was durable and acknowledged: "+
				"commits %d..%d (cases, receipts, audit entries) are missing, e.g. a damaged write-ahead log tail that badger dropped or an older copy of the directory; "+
				"restore the directory from a backup taken after commit %d, or, to accept the loss knowingly, delete %s",
				ErrStoreBehind, opts.Dir, c.commit, hw.path, recorded, c.commit+1, recorded, recorded, hw.path)
		}
		c.hw, c.hwCreated = hw, !exists && c.commit > 0
	}
	go c.loop()
	return c, nil
}

// do runs fn on the committer and waits until its effects are durable.
func (c *committer) do(fn func(*tx) error) error {
	o := &op{fn: fn, done: make(chan error, 1)}
	select {
	case c.ops <- o:
	case <-c.quit:
		return errClosed
	}
	select {
	case err := <-o.done:
		return err
	case <-c.stopped:
		// The loop may have finished this op just before stopping.
		select {
		case err := <-o.done:
			return err
		default:
			return errClosed
		}
	}
}

// submit queues fn without waiting (bookkeeping that may be lost in a crash).
func (c *committer) submit(fn func(*tx) error) {
	o := &op{fn: fn, done: make(chan error, 1)}
	select {
	case c.ops <- o:
	case <-c.quit:
	}
}

// stop ends the loop. Ops still queued are dropped, as a crash would drop
// them: nobody has been told they happened.
func (c *committer) stop() {
	select {
	case <-c.quit:
	default:
		close(c.quit)
	}
	<-c.stopped
	_ = c.hw.close()
	c.hw = nil
}

func (c *committer) auditHead() AuditHead {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.head
}

func (c *committer) loop() {
	defer close(c.stopped)
	for {
		var first *op
		select {
		case first = <-c.ops:
		case <-c.quit:
			return
		}
		batch := []*op{first}
	fill:
		for len(batch) < c.maxBatch {
			select {
			case o := <-c.ops:
				batch = append(batch, o)
			default:
				break fill
			}
		}
		c.runBatch(batch)
		select {
		case <-c.quit:
			return
		default:
		}
	}
}

// runBatch applies a batch of ops, commits, syncs, and only then reports
// to the ops. A batch too big for one badger transaction is split.
func (c *committer) runBatch(batch []*op) {
	for len(batch) > 0 {
		n, results, err := c.tryBatch(batch)
		if errors.Is(err, badger.ErrTxnTooBig) && n > 0 {
			// batch[:n] fitted before batch[n] was added: run it alone.
			batch2 := batch[:n]
			n2, results2, err2 := c.tryBatch(batch2)
			c.finish(batch2[:n2], results2, err2)
			batch = batch[n2:]
			continue
		}
		c.finish(batch[:n], results, err)
		batch = batch[n:]
	}
}

func (c *committer) finish(ops []*op, results []error, commitErr error) {
	for i, o := range ops {
		err := results[i]
		if commitErr != nil {
			err = fmt.Errorf("handover: commit: %w", commitErr)
		}
		o.done <- err
	}
}

// tryBatch runs the ops of batch in one transaction. It returns how many
// ops it dealt with and their results. With ErrTxnTooBig and n > 0 nothing
// was committed and batch[:n] should be retried alone; with n == 0 never.
func (c *committer) tryBatch(batch []*op) (int, []error, error) {
	c.mu.Lock()
	head := c.head
	seqs := make(map[string]uint64, len(c.seqs))
	for k, v := range c.seqs {
		seqs[k] = v
	}
	c.mu.Unlock()
	c.seqsView = seqs
	defer func() { c.seqsView = nil }()

	results := make([]error, len(batch))
	txn := c.db.NewTransaction(true)
	defer txn.Discard()
	n := 0
	wrote := false
	for i, o := range batch {
		t := &tx{c: c, txn: txn}
		if err := o.fn(t); err != nil {
			results[i] = err
			n = i + 1
			continue
		}
		h, err := applyWrites(txn, t, head, c.now)
		if errors.Is(err, badger.ErrTxnTooBig) {
			if i == 0 {
				// This op alone is too big: refuse it, commit nothing.
				results[0] = fmt.Errorf("handover: change too large: %w", err)
				return 1, results, nil
			}
			return i, results, err
		}
		if err != nil {
			return len(batch), results, err
		}
		head = h
		wrote = wrote || len(t.writes) > 0 || len(t.audits) > 0
		for k, v := range t.seqs {
			seqs[k] = v
		}
		n = i + 1
	}
	commit := c.commit
	if wrote {
		commit++
		if err := txn.Set(commitKey, encodeSeq(commit)); err != nil {
			// Not ErrTxnTooBig for runBatch: the batch fails as a whole.
			return n, results, fmt.Errorf("handover: commit sequence: %v", err)
		}
	}
	if err := txn.Commit(); err != nil {
		c.reload()
		return n, results, err
	}
	// A batch of reads needs no sync: every earlier batch was synced
	// before this one started.
	if wrote {
		if c.syncEach && !(c.faults != nil && c.faults.skip(fpSync)) {
			if err := c.db.Sync(); err != nil {
				c.reload()
				return n, results, err
			}
		}
		if err := c.synced(commit); err != nil {
			c.reload()
			return n, results, err
		}
	}
	c.mu.Lock()
	c.head = head
	c.seqs = seqs
	c.stats.batches++
	c.stats.ops += uint64(n)
	c.mu.Unlock()
	return n, results, nil
}

// applyWrites puts an op's buffered writes and audit entries into txn and
// returns the new audit head.
func applyWrites(txn *badger.Txn, t *tx, head AuditHead, now func() time.Time) (AuditHead, error) {
	for _, w := range t.writes {
		var err error
		if w.del {
			err = txn.Delete(w.key)
		} else {
			err = txn.Set(w.key, w.value)
		}
		if err != nil {
			return head, err
		}
	}
	for _, a := range t.audits {
		e := newAuditEntry(head, now(), a)
		b, err := json.Marshal(e)
		if err != nil {
			return head, err
		}
		if err := txn.Set(seqKey(pAudit, e.Seq), b); err != nil {
			return head, err
		}
		head = AuditHead{Seq: e.Seq, Hash: e.Hash, At: e.Time}
	}
	return head, nil
}

// synced is the commit path's sync point: the batch with commit sequence
// commit is durable in badger (committed with SyncWrites, or DB.Sync'ed).
// It advances the high-water mark (synced) before any op is answered.
func (c *committer) synced(commit uint64) error {
	if c.faults != nil && (!c.syncEach || !c.faults.skip(fpSync)) {
		// The power-loss tests copy the store here (never an error).
		if err := c.faults.crash(fpSynced, ""); err != nil {
			return err
		}
	}
	if c.hw != nil {
		if err := c.hw.set(commit); err != nil {
			return err
		}
	}
	c.commit = commit
	return nil
}

func (c *committer) reload() {
	head, err := loadAuditHead(c.db)
	commit, cerr := loadCommitSeq(c.db)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err == nil {
		c.head = head
	}
	if cerr == nil {
		c.commit = commit
	}
	c.seqs = map[string]uint64{}
}

// seq returns the last number used in the sequence under prefix, as seen by
// the current batch.
func (c *committer) seq(txn *badger.Txn, prefix string) (uint64, error) {
	if v, ok := c.seqsView[prefix]; ok {
		return v, nil
	}
	last, err := lastSeq(txn, prefix)
	if err != nil {
		return 0, err
	}
	c.seqsView[prefix] = last
	return last, nil
}

// lastSeq finds the highest sequence key under prefix.
func lastSeq(txn *badger.Txn, prefix string) (uint64, error) {
	opts := badger.DefaultIteratorOptions
	opts.Reverse = true
	opts.PrefetchValues = false
	opts.Prefix = []byte(prefix)
	it := txn.NewIterator(opts)
	defer it.Close()
	seek := append([]byte(prefix), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)
	it.Seek(seek)
	if !it.ValidForPrefix([]byte(prefix)) {
		return 0, nil
	}
	k := it.Item().Key()
	if len(k) != len(prefix)+8 {
		return 0, fmt.Errorf("handover: bad sequence key %q", k)
	}
	return binary.BigEndian.Uint64(k[len(prefix):]), nil
}

// view runs a read-only transaction.
func (s *Service) view(fn func(txn *badger.Txn) error) error { return s.db.View(fn) }

func getJSON(txn *badger.Txn, k []byte, v any) (bool, error) {
	it, err := txn.Get(k)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	err = it.Value(func(b []byte) error { return json.Unmarshal(b, v) })
	if err != nil {
		return false, fmt.Errorf("handover: decode %q: %w", k, err)
	}
	return true, nil
}
