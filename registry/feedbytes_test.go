package registry

import (
	"encoding/binary"
	"fmt"
	"strings"
	"testing"

	badger "github.com/dgraph-io/badger/v4"

	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
)

// TestFeedBoundedByBytes: with FeedRetentionBytes set, the change feed
// keeps at most that many bytes of encoded entries (plus the newest), far
// fewer than FeedRetention entries; readers from before its start are told
// to take a snapshot, readers from its start get every later entry; a
// replica applying the same log one entry at a time holds the same state.
// Below feature level 2 the bound is off (a previous version's replica
// would keep more), TestFeedByteBoundNeedsLevel2.
func TestFeedBoundedByBytes(t *testing.T) {
	h := newHarness(t)
	cfg := testFSMConfig()
	cfg.FeedRetentionBytes = 8 << 10
	f, err := NewFSM(h.db, cfg)
	if err != nil {
		t.Fatal(err)
	}
	h.fsm = f
	op := h.genesis()
	// The byte bound holds from feature level 2 (FeedBytesLevel).
	raise := raiseLog(t, h, FeedBytesLevel)
	h.fsm.Apply(raise)
	h.logs = append(h.logs, raise)
	name := strings.Repeat("n", 250)
	var largest int
	for i := 0; i < 120; i++ {
		h.mustApply(h.signed(op, mPutOrg(&registryv1.Organisation{Id: fmt.Sprintf("ssc-%d", i),
			Kind: registryv1.OrganisationKind_ORGANISATION_KIND_SHARED_SERVICE_CENTRE, Name: name})))
	}
	var total, count int
	var first uint64
	if err := h.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(pFeed), PrefetchValues: true})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			if first == 0 {
				first = binary.BigEndian.Uint64(it.Item().Key()[len(pFeed):])
			}
			total += len(v)
			largest = max(largest, len(v))
			count++
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	applied := h.fsm.AppliedIndex()
	t.Logf("feed holds %d entries, %d bytes (largest %d), from index %d; applied %d", count, total, largest, first, applied)
	if total > int(cfg.FeedRetentionBytes)+largest {
		t.Fatalf("feed holds %d bytes, bound %d", total, cfg.FeedRetentionBytes)
	}
	if count >= 100 {
		t.Fatalf("feed holds %d entries: not bounded by bytes", count)
	}
	r := NewReader(h.db)
	if _, _, ok, err := r.FeedAfter(0, 10); err != nil || ok {
		t.Fatalf("feed after 0: ok %v, %v; want a snapshot first", ok, err)
	}
	got, _, ok, err := r.FeedAfter(first-1, 1000)
	if err != nil || !ok {
		t.Fatalf("feed after %d: ok %v, %v", first-1, ok, err)
	}
	if len(got) != count || got[len(got)-1].GetIndex() != applied {
		t.Fatalf("feed after %d: %d entries up to %d, want %d up to %d", first-1, len(got), got[len(got)-1].GetIndex(), count, applied)
	}
	// A replica with the same configuration applying the same log one
	// entry at a time holds the same state, feed included.
	g := newHarness(t)
	if g.fsm, err = NewFSM(g.db, cfg); err != nil {
		t.Fatal(err)
	}
	for _, l := range h.logs {
		g.fsm.Apply(l)
	}
	requireSameState(t, dumpState(t, h.db), dumpState(t, g.db))
}

// TestFeedByteBoundNeedsLevel2: below FeedBytesLevel the feed is bounded
// by entries only, as a server of the previous version bounds it.
func TestFeedByteBoundNeedsLevel2(t *testing.T) {
	h := newHarness(t)
	cfg := testFSMConfig()
	cfg.FeedRetentionBytes = 8 << 10
	f, err := NewFSM(h.db, cfg)
	if err != nil {
		t.Fatal(err)
	}
	h.fsm = f
	op := h.genesis()
	name := strings.Repeat("n", 250)
	for i := 0; i < 60; i++ {
		h.mustApply(h.signed(op, mPutOrg(&registryv1.Organisation{Id: fmt.Sprintf("ssc-%d", i),
			Kind: registryv1.OrganisationKind_ORGANISATION_KIND_SHARED_SERVICE_CENTRE, Name: name})))
	}
	if _, _, ok, err := NewReader(h.db).FeedAfter(0, 1000); err != nil || !ok {
		t.Fatalf("feed after 0 at level 1: ok %v, %v; want every entry kept (bounded by entries only)", ok, err)
	}
}

// TestFeedTrimStartsAtFeedStart: dropping old feed entries reads the feed
// from its start, never the history below it. Badger keeps the deletions of
// every dropped entry as tombstones until compaction reaches them, so a
// trim that walked from the prefix's beginning stepped over one tombstone
// per entry ever dropped, and its cost grew with the feed's history (30 %
// of the leader's CPU in make bench once the byte bound started dropping).
// A live key planted below the start stands for that history here: a trim
// that walks it deletes it.
func TestFeedTrimStartsAtFeedStart(t *testing.T) {
	h := newHarness(t)
	cfg := testFSMConfig()
	cfg.FeedRetention = 5
	f, err := NewFSM(h.db, cfg)
	if err != nil {
		t.Fatal(err)
	}
	h.fsm = f
	op := h.genesis()
	put := func(i int) {
		h.mustApply(h.signed(op, mPutOrg(&registryv1.Organisation{Id: fmt.Sprintf("ssc-%d", i),
			Kind: registryv1.OrganisationKind_ORGANISATION_KIND_SHARED_SERVICE_CENTRE, Name: "Zentrum"})))
	}
	for i := range 20 {
		put(i)
	}
	var start uint64
	if err := h.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get([]byte(keyFeedStart))
		if err != nil {
			return err
		}
		return item.Value(func(v []byte) error { start = binary.BigEndian.Uint64(v); return nil })
	}); err != nil {
		t.Fatal(err)
	}
	if start < 3 {
		t.Fatalf("feed start %d after 20 entries with retention 5: nothing was dropped", start)
	}
	planted := feedKey(1)
	if err := h.db.Update(func(txn *badger.Txn) error { return txn.Set(planted, []byte("history")) }); err != nil {
		t.Fatal(err)
	}
	for i := 20; i < 25; i++ {
		put(i)
	}
	if err := h.db.View(func(txn *badger.Txn) error {
		_, err := txn.Get(planted)
		return err
	}); err != nil {
		t.Fatalf("the key below the feed's start (%d) was visited by a trim: %v", start, err)
	}
}
