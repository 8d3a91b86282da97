package raftlog_test

import (
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/verbund/verbund/node/raftlog"
)

// The comparison with hashicorp/raft-wal v0.4.2 and with raftbadger (the
// badger store the nodes used before, kept only there) lives in the
// walbench module (raft-wal cannot be linked with raft v1.8.0); this
// benchmark is the same loop for this package alone.

type countingFS struct {
	raftlog.FS
	syncs atomic.Int64
}

func (c *countingFS) OpenFile(name string, flag int) (raftlog.File, error) {
	f, err := c.FS.OpenFile(name, flag)
	if err != nil {
		return nil, err
	}
	return countingFile{f, &c.syncs}, nil
}

func (c *countingFS) SyncDir(dir string) error {
	c.syncs.Add(1)
	return c.FS.SyncDir(dir)
}

type countingFile struct {
	raftlog.File
	n *atomic.Int64
}

func (f countingFile) Sync() error {
	f.n.Add(1)
	return f.File.Sync()
}

// BenchmarkSyncedBatchAppend appends batches of ~1 KiB entries, each batch
// one StoreLogs call that returns once the batch is durable.
func BenchmarkSyncedBatchAppend(b *testing.B) {
	data := make([]byte, 1024)
	for i := range data {
		data[i] = byte(i*31 + i/7)
	}
	type store interface {
		StoreLogs([]*raft.Log) error
		Close() error
	}
	open := map[string]func(b *testing.B, dir string) (store, func() int64){
		"raftlog": func(b *testing.B, dir string) (store, func() int64) {
			fs := &countingFS{FS: raftlog.OS{}}
			return mustOpen(b, dir, raftlog.Options{FS: fs, Logger: slog.New(slog.DiscardHandler)}), fs.syncs.Load
		},
	}
	for _, name := range []string{"raftlog"} {
		for _, n := range []int{1, 16, 256} {
			b.Run(fmt.Sprintf("%s/batch=%d", name, n), func(b *testing.B) {
				s, syncs := open[name](b, b.TempDir())
				defer s.Close()
				batch := make([]*raft.Log, n)
				idx := uint64(1)
				var synced0 int64
				if syncs != nil {
					synced0 = syncs()
				}
				start := time.Now()
				batches := 0
				for b.Loop() {
					for i := range batch {
						batch[i] = &raft.Log{Index: idx, Term: 1, Type: raft.LogCommand, Data: data, AppendedAt: time.Now()}
						idx++
					}
					if err := s.StoreLogs(batch); err != nil {
						b.Fatal(err)
					}
					batches++
				}
				sec := time.Since(start).Seconds()
				b.ReportMetric(float64(batches*n)/sec, "entries/s")
				b.ReportMetric(float64(batches)/sec, "batches/s")
				if syncs != nil {
					b.ReportMetric(float64(syncs()-synced0)/sec, "fsyncs/s")
				}
			})
		}
	}
}
