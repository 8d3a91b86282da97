package raftlog_test

import (
	"bytes"
	"errors"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/verbund/verbund/node/raftlog"
)

// TestConcurrentReaders reads while a writer appends, compacts and
// truncates (run with -race): a reader gets the entry as written or
// ErrLogNotFound, never an error or other data.
func TestConcurrentReaders(t *testing.T) {
	s := mustOpen(t, t.TempDir(), raftlog.Options{SegmentSize: 8 << 10})
	defer s.Close()
	var done atomic.Bool
	var wg sync.WaitGroup
	errc := make(chan error, 4)
	for r := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			i := uint64(r)
			for !done.Load() {
				last, _ := s.LastIndex()
				if last == 0 {
					continue
				}
				i = i*6364136223846793005 + 1442695040888963407
				idx := 1 + i%last
				var l raft.Log
				err := s.GetLog(idx, &l)
				if errors.Is(err, raft.ErrLogNotFound) {
					continue
				}
				want := entries(idx, idx, l.Term, 0)[0]
				if err != nil || l.Index != idx || !bytes.Equal(l.Data, want.Data) {
					errc <- err
					if err == nil {
						errc <- errors.New("wrong entry")
					}
					return
				}
			}
		}()
	}
	next := uint64(1)
	for round := range 300 {
		b := entries(next, next+9, 1, 0)
		if err := s.StoreLogs(b); err != nil {
			t.Fatal(err)
		}
		next += 10
		switch round % 10 {
		case 3:
			first, _ := s.FirstIndex()
			if err := s.DeleteRange(first, next-50); err != nil {
				t.Fatal(err)
			}
		case 7:
			if err := s.DeleteRange(next-5, next-1); err != nil {
				t.Fatal(err)
			}
			next -= 5
		}
	}
	done.Store(true)
	wg.Wait()
	select {
	case err := <-errc:
		t.Fatal(err)
	default:
	}
}
