package registry

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/dgraph-io/badger/v4"
	"google.golang.org/protobuf/proto"
)

// stage is a write overlay over a badger transaction (or over another stage).
// A command is applied into its own stage and merged into the log's stage
// only if every mutation succeeds, which makes commands all-or-nothing
// without relying on badger transaction rollbacks.
type stage struct {
	parent *stage
	txn    *badger.Txn
	writes map[string][]byte // nil value = delete
	order  []string
}

func newStage(parent *stage, txn *badger.Txn) *stage {
	return &stage{parent: parent, txn: txn, writes: map[string][]byte{}}
}

// get returns the value of key, or nil if absent.
func (s *stage) get(key []byte) ([]byte, error) {
	// Reads fall through the overlays to the root's transaction: a
	// command's stage has no txn of its own.
	var txn *badger.Txn
	for st := s; st != nil; st = st.parent {
		if v, ok := st.writes[string(key)]; ok {
			return v, nil
		}
		txn = st.txn
	}
	if txn == nil {
		return nil, nil
	}
	item, err := txn.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return item.ValueCopy(nil)
}

// getIndex reads an index stored with u64 (0 if absent).
func (s *stage) getIndex(key string) (uint64, error) {
	v, err := s.get([]byte(key))
	switch {
	case err != nil:
		return 0, err
	case v == nil:
		return 0, nil
	case len(v) != 8:
		return 0, fmt.Errorf("%s holds %d bytes, not an 8-byte index", key, len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}

func (s *stage) has(key []byte) (bool, error) {
	v, err := s.get(key)
	return v != nil, err
}

func (s *stage) set(key, val []byte) {
	if val == nil {
		val = []byte{}
	}
	ks := string(key)
	if _, ok := s.writes[ks]; !ok {
		s.order = append(s.order, ks)
	}
	s.writes[ks] = val
}

func (s *stage) del(key []byte) {
	ks := string(key)
	if _, ok := s.writes[ks]; !ok {
		s.order = append(s.order, ks)
	}
	s.writes[ks] = nil
}

// merge moves s's writes into its parent.
func (s *stage) merge() {
	for _, k := range s.order {
		v := s.writes[k]
		if _, ok := s.parent.writes[k]; !ok {
			s.parent.order = append(s.parent.order, k)
		}
		s.parent.writes[k] = v
	}
}

// size estimates the bytes and entries s would add to a badger txn.
func (s *stage) size() (bytes, count int) {
	for _, k := range s.order {
		bytes += len(k) + len(s.writes[k]) + 64
	}
	return bytes, len(s.order)
}

func (s *stage) flush(txn *badger.Txn) error {
	for _, k := range s.order {
		v := s.writes[k]
		var err error
		if v == nil {
			err = txn.Delete([]byte(k))
		} else {
			err = txn.Set([]byte(k), v)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (s *stage) getProto(key []byte, m proto.Message) (bool, error) {
	v, err := s.get(key)
	if err != nil || v == nil {
		return false, err
	}
	if err := proto.Unmarshal(v, m); err != nil {
		return false, err
	}
	return true, nil
}

func (s *stage) setProto(key []byte, m proto.Message) error {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return err
	}
	s.set(key, b)
	return nil
}

// exists reports whether key is present, also with an empty value (get
// returns nil for those when they come from badger).
func (s *stage) exists(key []byte) (bool, error) {
	var txn *badger.Txn
	for st := s; st != nil; st = st.parent {
		if v, ok := st.writes[string(key)]; ok {
			return v != nil, nil
		}
		txn = st.txn
	}
	if txn == nil {
		return false, nil
	}
	_, err := txn.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return false, nil
	}
	return err == nil, err
}

// scan returns the keys under prefix, sorted, as this stage sees them: the
// transaction's keys with the writes of every overlay applied (so a command
// sees what earlier commands of the same log entry wrote).
func (s *stage) scan(prefix []byte) ([]string, error) {
	var chain []*stage
	var txn *badger.Txn
	for st := s; st != nil; st = st.parent {
		chain = append(chain, st)
		txn = st.txn
	}
	present := map[string]bool{}
	if txn != nil {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
		for it.Rewind(); it.Valid(); it.Next() {
			present[string(it.Item().KeyCopy(nil))] = true
		}
		it.Close()
	}
	p := string(prefix)
	for i := len(chain) - 1; i >= 0; i-- { // root first: children override
		for _, k := range chain[i].order {
			if !strings.HasPrefix(k, p) {
				continue
			}
			if chain[i].writes[k] == nil {
				delete(present, k)
			} else {
				present[k] = true
			}
		}
	}
	return slices.Sorted(maps.Keys(present)), nil
}
