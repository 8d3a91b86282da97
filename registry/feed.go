package registry

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/dgraph-io/badger/v4"
	"google.golang.org/protobuf/proto"

	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
)

// Changed returns a channel that is closed when the applied index advances.
func (f *FSM) Changed() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.appliedC
}

// FeedAfter returns up to max change feed entries with an index above
// after, and the applied index of the same snapshot of the state: when no
// entry is returned, nothing changed between after and that index. ok is
// false when after is older than the feed retains (send a snapshot first).
func (r *Reader) FeedAfter(after uint64, max int) (entries []*registryv1.FeedEntry, applied uint64, ok bool, err error) {
	return r.FeedAfterBounded(after, max, 0)
}

// FeedAfterBounded is FeedAfter that also stops once the entries read
// hold maxBytes (encoded; 0: no bound; at least one entry is returned).
// With max 0 it reads no entry: only applied and ok.
func (r *Reader) FeedAfterBounded(after uint64, max, maxBytes int) (entries []*registryv1.FeedEntry, applied uint64, ok bool, err error) {
	applied, err = r.view(func(st *stage) error {
		start, err := st.getIndex(keyFeedStart)
		if err != nil {
			return err
		}
		if after < start {
			return nil
		}
		ok = true
		if max <= 0 {
			return nil
		}
		it := st.txn.NewIterator(badger.IteratorOptions{Prefix: []byte(pFeed), PrefetchValues: true, PrefetchSize: min(max, 16)})
		defer it.Close()
		size := 0
		for it.Seek(feedKey(after + 1)); it.Valid() && len(entries) < max && (maxBytes <= 0 || size < maxBytes); it.Next() {
			size += int(it.Item().ValueSize())
			e := &registryv1.FeedEntry{}
			if err := it.Item().Value(func(v []byte) error { return proto.Unmarshal(v, e) }); err != nil {
				return err
			}
			entries = append(entries, e)
		}
		return nil
	})
	return entries, applied, ok, err
}

// replicated reports whether a state key is part of what replicas copy:
// everything but the feed itself, dedupe bookkeeping and the index markers.
func replicated(k string) bool {
	return !(strings.HasPrefix(k, pFeed) || strings.HasPrefix(k, pCmd) || strings.HasPrefix(k, pCmdExpiry) || k == keyApplied || k == keyFeedStart || k == keyFeedBytes)
}

// SnapshotWrites streams the whole replicated state, from one consistent
// view, in chunks of about chunk writes, and returns the index it reflects.
func (r *Reader) SnapshotWrites(ctx context.Context, chunk int, fn func(writes []*registryv1.StateWrite) error) (uint64, error) {
	return r.SnapshotWritesBounded(ctx, chunk, 0, fn)
}

// SnapshotWritesBounded is SnapshotWrites with chunks also cut once their
// keys and values reach maxBytes (0: no byte bound), so a chunk's memory
// does not grow with the size of the records. Values are not prefetched
// beyond the next few: a snapshot stream holds about one chunk, not a
// window of the whole state (the change feed's snapshots, api_watch.go).
func (r *Reader) SnapshotWritesBounded(ctx context.Context, chunk, maxBytes int, fn func(writes []*registryv1.StateWrite) error) (uint64, error) {
	return r.view(func(st *stage) error {
		it := st.txn.NewIterator(badger.IteratorOptions{PrefetchValues: true, PrefetchSize: 16})
		defer it.Close()
		var (
			batch []*registryv1.StateWrite
			size  int
		)
		for it.Rewind(); it.Valid(); it.Next() {
			if !replicated(string(it.Item().Key())) {
				continue
			}
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			k := it.Item().KeyCopy(nil)
			batch = append(batch, &registryv1.StateWrite{Key: k, Value: v})
			size += len(k) + len(v)
			if len(batch) >= chunk || maxBytes > 0 && size >= maxBytes {
				if err := ctx.Err(); err != nil {
					return err
				}
				if err := fn(batch); err != nil {
					return err
				}
				batch, size = nil, 0
			}
		}
		return fn(batch)
	})
}

// Changes derives the entity changes from state writes at index: every
// write of an organisation, service, offering, authorisation or audit head
// record.
func Changes(index uint64, writes []*registryv1.StateWrite, withValues bool) []*registryv1.Change {
	var out []*registryv1.Change
	for _, w := range writes {
		k := string(w.GetKey())
		c := &registryv1.Change{Index: index, Deleted: w.GetDelete()}
		var m proto.Message
		switch {
		case strings.HasPrefix(k, pOrg):
			c.Kind, c.Id = registryv1.ChangeKind_CHANGE_KIND_ORGANISATION, k[len(pOrg):]
			if withValues && !c.Deleted {
				o := &registryv1.Organisation{}
				m, c.Entity = o, &registryv1.Change_Organisation{Organisation: o}
			}
		case strings.HasPrefix(k, pService):
			c.Kind, c.Id = registryv1.ChangeKind_CHANGE_KIND_SERVICE, k[len(pService):]
			if withValues && !c.Deleted {
				s := &registryv1.Service{}
				m, c.Entity = s, &registryv1.Change_Service{Service: s}
			}
		case strings.HasPrefix(k, pOffering):
			c.Kind, c.Id = registryv1.ChangeKind_CHANGE_KIND_OFFERING, k[len(pOffering):]
			if withValues && !c.Deleted {
				o := &registryv1.Offering{}
				m, c.Entity = o, &registryv1.Change_Offering{Offering: o}
			}
		case strings.HasPrefix(k, pAuth):
			c.Kind, c.Id = registryv1.ChangeKind_CHANGE_KIND_AUTHORISATION, k[len(pAuth):]
			if withValues && !c.Deleted {
				au := &registryv1.Authorisation{}
				m, c.Entity = au, &registryv1.Change_Authorisation{Authorisation: au}
			}
		case strings.HasPrefix(k, pAuditHead):
			c.Kind, c.Id = registryv1.ChangeKind_CHANGE_KIND_AUDIT_HEAD, k[len(pAuditHead):]
			if withValues && !c.Deleted {
				h := &registryv1.AuditHead{}
				m, c.Entity = h, &registryv1.Change_AuditHead{AuditHead: h}
			}
		default:
			continue
		}
		if m != nil {
			if err := proto.Unmarshal(w.GetValue(), m); err != nil {
				continue
			}
		}
		out = append(out, c)
	}
	return out
}

// FeedCopy is a read copy of the registry state kept from the change feed
// (a member node's local registry). Reads use a Reader over the same DB.
type FeedCopy struct {
	db       *badger.DB
	applied  atomic.Uint64
	mu       sync.Mutex
	appliedC chan struct{}
}

// NewFeedCopy opens a feed copy over db, resuming at its stored index.
func NewFeedCopy(db *badger.DB) (*FeedCopy, error) {
	r := &FeedCopy{db: db, appliedC: make(chan struct{})}
	idx, err := NewReader(db).view(func(*stage) error { return nil })
	if err != nil {
		return nil, err
	}
	r.applied.Store(idx)
	return r, nil
}

// AppliedIndex is the index the copy reflects (0 during a snapshot).
func (r *FeedCopy) AppliedIndex() uint64 { return r.applied.Load() }

// WaitApplied blocks until the copy reflects index, or ctx ends.
func (r *FeedCopy) WaitApplied(ctx context.Context, index uint64) error {
	for {
		r.mu.Lock()
		c := r.appliedC
		r.mu.Unlock()
		if r.applied.Load() >= index {
			return nil
		}
		select {
		case <-c:
		case <-ctx.Done():
			return fmt.Errorf("wait for index %d (replica at %d): %w", index, r.applied.Load(), ctx.Err())
		}
	}
}

// Apply applies one message of a Watch stream (with state writes). A
// snapshot resets the copy; its index is recorded only with its last part,
// so an interrupted snapshot leaves the copy at index 0 and the next watch
// starts over with a snapshot.
func (r *FeedCopy) Apply(m *registryv1.WatchResponse) error {
	if m.GetReset_() {
		if err := r.db.DropAll(); err != nil {
			return fmt.Errorf("replica reset: %w", err)
		}
		r.setApplied(0)
	}
	wb := r.db.NewWriteBatch()
	defer wb.Cancel()
	for _, w := range m.GetWrites() {
		var err error
		if w.GetDelete() {
			err = wb.Delete(w.GetKey())
		} else {
			err = wb.Set(w.GetKey(), w.GetValue())
		}
		if err != nil {
			return fmt.Errorf("replica apply: %w", err)
		}
	}
	done := !m.GetSnapshot() || m.GetSnapshotDone()
	if done && m.GetIndex() > 0 {
		if err := wb.Set([]byte(keyApplied), u64(m.GetIndex())); err != nil {
			return err
		}
	}
	if err := wb.Flush(); err != nil {
		return fmt.Errorf("replica apply: %w", err)
	}
	if done && m.GetIndex() > r.applied.Load() {
		r.setApplied(m.GetIndex())
	}
	return nil
}

func (r *FeedCopy) setApplied(i uint64) {
	r.applied.Store(i)
	r.mu.Lock()
	close(r.appliedC)
	r.appliedC = make(chan struct{})
	r.mu.Unlock()
}
