// Package walbench compares synced batch appends of the Raft log store
// candidates in one run: raftlog (ours), raftbadger (the badger store it
// replaces) and hashicorp/raft-wal v0.4.2. It is a separate module because
// raft-wal v0.4.2 cannot be linked with raft v1.8.0 (see go.mod); run it
// from this directory:
//
//	go test -run '^$' -bench . -count 3
package walbench
