package node

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/verbund/verbund/federation/handover"
	"github.com/verbund/verbund/internal/badgercheck"
	"github.com/verbund/verbund/node/raftlog"
	"github.com/verbund/verbund/registry"
)

// Backups of the registry ("verbund snapshot save|inspect|restore"), like
// etcdutl snapshot and consul snapshot.
//
// A backup file is
//
//	"VERBUND-BACKUP\n"                 magic
//	uint32 BE n, n bytes of JSON        BackupHeader (format version, index, term, operator, node, size)
//	header.Size bytes                   the registry's Raft snapshot (registry format, CRC-32C inside)
//	32 bytes                            SHA-256 of every byte before it
//
// The leader writes it (SnapshotTo): a Raft barrier first (everything the
// cluster acknowledged before the call is applied), then a Raft snapshot
// (raft.Snapshot: the FSM state at one applied index, taken between
// applies while the cluster keeps serving writes), streamed from the
// snapshot store. InspectBackup verifies the checksum and counts what the
// snapshot holds; RestoreBackup seeds a fresh data dir for a new one-voter
// cluster with it.
const (
	backupMagic         = "VERBUND-BACKUP\n"
	BackupFormatVersion = 1
	maxBackupHeader     = 1 << 16
	// SnapshotPath serves a backup of the registry to an ADMIN of this
	// node (access.go); HandoverBackupPath one of this node's handover store.
	SnapshotPath       = "/admin/v1/snapshot"
	HandoverBackupPath = "/admin/v1/handover-backup"
	// Backup kinds (BackupHeader.Kind).
	KindRegistry  = "registry"
	KindHandovers = "handovers"
)

// ErrBackupCorrupt: a backup file is truncated, not a backup, or fails its
// SHA-256.
var ErrBackupCorrupt = errors.New("backup file corrupt")

// ErrNotLeader: the node asked for a backup does not lead the Raft cluster.
var ErrNotLeader = errors.New("this node is not the Raft leader")

// BackupHeader describes a backup file.
type BackupHeader struct {
	FormatVersion int    `json:"format_version"`
	Kind          string `json:"kind"`  // KindRegistry or KindHandovers
	Index         uint64 `json:"index"` // registry: Raft index; handovers: the store's commit sequence
	Term          uint64 `json:"term"`
	// Handovers only: the organisation and its audit chain head.
	Org       string    `json:"org,omitempty"`
	AuditSeq  uint64    `json:"audit_seq,omitempty"`
	AuditHash string    `json:"audit_hash,omitempty"`
	Operator  string    `json:"operator"` // the network operator's organisation id
	Node      string    `json:"node"`     // the node that wrote it
	Created   time.Time `json:"created"`
	Size      int64     `json:"size"` // bytes of the snapshot body
}

// SnapshotTo writes a backup of the registry to w (see above). Only the
// leader writes one: ErrNotLeader (with the leader's id) otherwise.
func (n *Node) SnapshotTo(ctx context.Context, w io.Writer) (*BackupHeader, error) {
	if !n.isServer() || n.raft == nil {
		return nil, fmt.Errorf("%w: this node is a member without Raft state", ErrNotLeader)
	}
	if n.raft.State() != raft.Leader {
		_, id := n.raft.LeaderWithID()
		return nil, fmt.Errorf("%w: ask the leader %q", ErrNotLeader, id)
	}
	timeout := 30 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	// The barrier applies everything committed before it, and it is a new
	// log entry, so the snapshot below always has something new.
	if err := n.raft.Barrier(timeout).Error(); err != nil {
		return nil, fmt.Errorf("raft barrier: %w", err)
	}
	f := n.raft.Snapshot()
	if err := f.Error(); err != nil {
		return nil, fmt.Errorf("raft snapshot: %w", err)
	}
	meta, rc, err := f.Open()
	if err != nil {
		return nil, fmt.Errorf("open raft snapshot: %w", err)
	}
	defer rc.Close()
	op, _ := n.reader.Operator()
	h := &BackupHeader{FormatVersion: BackupFormatVersion, Kind: KindRegistry, Index: meta.Index, Term: meta.Term,
		Operator: op, Node: n.cfg.NodeID, Created: time.Now().UTC(), Size: meta.Size}
	if err := writeBackup(w, h, rc); err != nil {
		return nil, err
	}
	return h, nil
}

// writeBackup writes header, body (h.Size bytes) and the SHA-256 trailer.
func writeBackup(w io.Writer, h *BackupHeader, body io.Reader) error {
	sum := sha256.New()
	bw := bufio.NewWriterSize(io.MultiWriter(w, sum), 1<<20)
	hj, err := json.Marshal(h)
	if err != nil {
		return err
	}
	var l [4]byte
	binary.BigEndian.PutUint32(l[:], uint32(len(hj)))
	for _, b := range [][]byte{[]byte(backupMagic), l[:], hj} {
		if _, err := bw.Write(b); err != nil {
			return err
		}
	}
	if n, err := io.Copy(bw, io.LimitReader(body, h.Size)); err != nil {
		return fmt.Errorf("copy snapshot: %w", err)
	} else if n != h.Size {
		return fmt.Errorf("snapshot ended after %d of %d bytes", n, h.Size)
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	_, err = w.Write(sum.Sum(nil))
	return err
}

// backupReader reads a backup file: the header, then the body; Verify
// reads the trailer and checks the SHA-256.
type backupReader struct {
	br   *bufio.Reader
	sum  hash.Hash
	Head BackupHeader
	body io.Reader // limited to Head.Size, hashed
}

func openBackup(r io.Reader) (*backupReader, error) {
	b := &backupReader{br: bufio.NewReaderSize(r, 1<<20), sum: sha256.New()}
	tr := io.TeeReader(b.br, b.sum)
	magic := make([]byte, len(backupMagic))
	if _, err := io.ReadFull(tr, magic); err != nil || string(magic) != backupMagic {
		return nil, fmt.Errorf("%w: not a verbund backup (no %q header)", ErrBackupCorrupt, strings.TrimSpace(backupMagic))
	}
	var l [4]byte
	if _, err := io.ReadFull(tr, l[:]); err != nil {
		return nil, fmt.Errorf("%w: truncated header", ErrBackupCorrupt)
	}
	hl := binary.BigEndian.Uint32(l[:])
	if hl > maxBackupHeader {
		return nil, fmt.Errorf("%w: header of %d bytes", ErrBackupCorrupt, hl)
	}
	hj := make([]byte, hl)
	if _, err := io.ReadFull(tr, hj); err != nil {
		return nil, fmt.Errorf("%w: truncated header", ErrBackupCorrupt)
	}
	if err := json.Unmarshal(hj, &b.Head); err != nil {
		return nil, fmt.Errorf("%w: header: %v", ErrBackupCorrupt, err)
	}
	if b.Head.FormatVersion != BackupFormatVersion {
		return nil, fmt.Errorf("%w: format version %d, this version reads %d", ErrBackupCorrupt, b.Head.FormatVersion, BackupFormatVersion)
	}
	if b.Head.Size < 0 {
		return nil, fmt.Errorf("%w: negative size", ErrBackupCorrupt)
	}
	b.body = io.LimitReader(tr, b.Head.Size)
	return b, nil
}

// verify drains the body and checks the trailing SHA-256.
func (b *backupReader) verify() error {
	if _, err := io.Copy(io.Discard, b.body); err != nil {
		return fmt.Errorf("%w: %v", ErrBackupCorrupt, err)
	}
	want := b.sum.Sum(nil)
	got := make([]byte, sha256.Size)
	if _, err := io.ReadFull(b.br, got); err != nil {
		return fmt.Errorf("%w: truncated (no SHA-256 trailer)", ErrBackupCorrupt)
	}
	if string(got) != string(want) {
		return fmt.Errorf("%w: SHA-256 mismatch", ErrBackupCorrupt)
	}
	if _, err := b.br.ReadByte(); err != io.EOF {
		return fmt.Errorf("%w: trailing bytes after the SHA-256", ErrBackupCorrupt)
	}
	return nil
}

// BackupInfo is what InspectBackup found.
type BackupInfo struct {
	Header BackupHeader
	// FileSize is the size of the whole file; Keys the number of records.
	FileSize int64
	Keys     int
	// Counts per entity kind (organisations, services, offerings, ...).
	Counts map[string]int
	// Applied is the applied index recorded inside the snapshot.
	Applied uint64
}

// entityKinds names the registry's record kinds by key prefix (registry/keys.go).
var entityKinds = []struct{ prefix, name string }{
	{"o/", "organisations"}, {"s/", "services"}, {"f/", "offerings"}, {"a/", "authorisations"},
	{"h/", "audit heads"}, {"j/", "signed commands"}, {"y/", "history entries"}, {"e/", "change feed entries"},
	{"c/", "command dedupe records"},
}

// InspectBackup reads a whole backup, verifies its SHA-256 and the
// snapshot's own CRC, and counts its records.
func InspectBackup(r io.Reader) (*BackupInfo, error) {
	cr := &countingReader{r: r}
	b, err := openBackup(cr)
	if err != nil {
		return nil, err
	}
	info := &BackupInfo{Header: b.Head, Counts: map[string]int{}}
	if b.Head.Kind == KindHandovers {
		// badger's backup format: verified by the SHA-256; counted on restore.
		if err := b.verify(); err != nil {
			return nil, err
		}
		info.FileSize = cr.n
		return info, nil
	}
	n, err := registry.ScanSnapshot(b.body, func(key, val []byte) error {
		if string(key) == "m/applied" && len(val) == 8 {
			info.Applied = binary.BigEndian.Uint64(val)
		}
		for _, k := range entityKinds {
			if strings.HasPrefix(string(key), k.prefix) {
				info.Counts[k.name]++
				break
			}
		}
		return nil
	})
	if err != nil {
		// A damaged body usually fails the SHA-256 too: say that first.
		if verr := b.verify(); verr != nil {
			return nil, verr
		}
		return nil, fmt.Errorf("%w: %v", ErrBackupCorrupt, err)
	}
	info.Keys = n
	if err := b.verify(); err != nil {
		return nil, err
	}
	info.FileSize = cr.n
	return info, nil
}

// KindNames returns the counted kinds in a stable order.
func (i *BackupInfo) KindNames() []string {
	var names []string
	for k := range i.Counts {
		names = append(names, k)
	}
	sort.Strings(names)
	return names
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// RestoreBackup creates the data dir of a new one-voter cluster from a
// backup file: it verifies the whole file first, then writes its snapshot
// into dataDir/raft/snapshots with a Raft configuration of one voter
// (nodeID at raftAddr, the address the node will advertise) and Raft's
// term set to the snapshot's. The node started on dataDir (without
// --bootstrap: the snapshot is its existing state) restores the registry
// from it, elects itself and serves; other nodes then join it as usual.
// dataDir must not exist or be empty.
func RestoreBackup(file, dataDir, nodeID, raftAddr string) (*BackupHeader, error) {
	if nodeID == "" || raftAddr == "" {
		return nil, errors.New("restore: the node id and its Raft address are required")
	}
	if ents, err := os.ReadDir(dataDir); err == nil && len(ents) > 0 {
		return nil, fmt.Errorf("restore: %s is not empty; restore into a fresh data dir", dataDir)
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	f, b, err := openVerified(file, KindRegistry)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	raftDir := filepath.Join(dataDir, "raft")
	if err := os.MkdirAll(raftDir, 0o700); err != nil {
		return nil, err
	}
	logger := hclog.New(&hclog.LoggerOptions{Name: "snapshot", Level: hclog.Warn, Output: os.Stderr})
	fileSnaps, err := raft.NewFileSnapshotStoreWithLogger(raftDir, 3, logger)
	if err != nil {
		return nil, fmt.Errorf("open snapshot store: %w", err)
	}
	snaps := newCheckedSnapshotStore(fileSnaps, raftDir, slog.Default())
	conf := raft.Configuration{Servers: []raft.Server{{ID: raft.ServerID(nodeID), Address: raft.ServerAddress(raftAddr), Suffrage: raft.Voter}}}
	_, trans := raft.NewInmemTransport("") // encodes peers as their address, as the TCP transports do
	sink, err := snaps.Create(raft.SnapshotVersionMax, b.Head.Index, b.Head.Term, conf, b.Head.Index, trans)
	if err != nil {
		return nil, fmt.Errorf("create snapshot: %w", err)
	}
	if _, err := io.Copy(sink, b.body); err != nil {
		_ = sink.Cancel()
		return nil, fmt.Errorf("write snapshot: %w", err)
	}
	if err := sink.Close(); err != nil {
		return nil, fmt.Errorf("write snapshot: %w", err)
	}
	// Raft's term must not go back behind the snapshot's last term.
	store, err := raftlog.Open(filepath.Join(raftDir, raftLogDir), raftlog.Options{})
	if err != nil {
		return nil, fmt.Errorf("create raft log: %w", err)
	}
	defer store.Close()
	if err := store.SetUint64([]byte("CurrentTerm"), b.Head.Term); err != nil {
		return nil, err
	}
	h := b.Head
	return &h, nil
}

// QuorumRecovery reports what RecoverQuorum did.
type QuorumRecovery struct {
	Voters        []raft.Server
	SnapshotIndex uint64 // the snapshot written with the new configuration
	Applied       uint64 // the registry state's applied index after the recovery
}

// RecoverQuorum is Raft's peers.json recovery for a STOPPED node of a
// cluster that lost its quorum for good: it replays the node's snapshot
// and log into its registry state (every entry the node holds, committed
// or not: entries the lost voters never acknowledged become committed),
// writes a snapshot whose Raft configuration is exactly voters, and
// compacts the log (raft.RecoverCluster). Started again, the node (with
// the other listed voters, if any, recovered the same way) elects itself
// and serves; new nodes join it. Entries only the lost voters held are
// gone: nothing the cluster acknowledged is lost if a surviving voter
// holds it, which Raft guarantees for a quorum, not for one voter; recover
// the survivor with the highest last index.
func RecoverQuorum(dataDir string, voters []raft.Server) (*QuorumRecovery, error) {
	if len(voters) == 0 {
		return nil, errors.New("recover quorum: no voters given")
	}
	if _, err := os.Stat(filepath.Join(dataDir, "raft", raftLogDir)); err != nil {
		return nil, fmt.Errorf("%s does not look like the data dir of a Raft server: %w", dataDir, err)
	}
	if err := checkStopped(dataDir); err != nil {
		return nil, err
	}
	opts := badger.DefaultOptions(filepath.Join(dataDir, "state")).
		WithLogger(nil).WithSyncWrites(false).WithNumVersionsToKeep(1).
		WithChecksumVerificationMode(options.OnBlockRead).WithVerifyValueChecksum(true)
	db, err := badgercheck.Open(opts)
	if err != nil {
		return nil, fmt.Errorf("open state: %w", err)
	}
	defer db.Close()
	fsm, err := registry.NewFSM(db, registry.FSMConfig{})
	if err != nil {
		return nil, err
	}
	raftDir := filepath.Join(dataDir, "raft")
	store, err := raftlog.Open(filepath.Join(raftDir, raftLogDir), raftlog.Options{})
	if err != nil {
		return nil, fmt.Errorf("open raft log (if it is damaged, run verbund recover raft-log first only on a node that can catch up; here it is the only copy): %w", err)
	}
	defer store.Close()
	logger := hclog.New(&hclog.LoggerOptions{Name: "recover", Level: hclog.Warn, Output: os.Stderr})
	fileSnaps, err := raft.NewFileSnapshotStoreWithLogger(raftDir, 3, logger)
	if err != nil {
		return nil, fmt.Errorf("open snapshot store: %w", err)
	}
	snaps := newCheckedSnapshotStore(fileSnaps, raftDir, slog.Default())
	rc := raft.DefaultConfig()
	rc.LocalID = voters[0].ID
	rc.Logger = logger
	_, trans := raft.NewInmemTransport("")
	conf := raft.Configuration{Servers: voters}
	if err := raft.RecoverCluster(rc, fsm, store, store, snaps, trans, conf); err != nil {
		return nil, fmt.Errorf("recover cluster: %w", err)
	}
	if err := db.Sync(); err != nil {
		return nil, err
	}
	rec := &QuorumRecovery{Voters: voters, Applied: fsm.AppliedIndex()}
	if list, err := snaps.List(); err == nil && len(list) > 0 {
		rec.SnapshotIndex = list[0].Index
	}
	return rec, nil
}

// ParseVoters parses "id=host:port,id=host:port".
func ParseVoters(s string) ([]raft.Server, error) {
	var out []raft.Server
	seen := map[string]bool{}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		id, addr, ok := strings.Cut(part, "=")
		if !ok || id == "" || addr == "" {
			return nil, fmt.Errorf("voter %q: want ID=HOST:PORT (the node id and its Raft address)", part)
		}
		if seen[id] {
			return nil, fmt.Errorf("voter %q listed twice", id)
		}
		seen[id] = true
		out = append(out, raft.Server{ID: raft.ServerID(id), Address: raft.ServerAddress(addr), Suffrage: raft.Voter})
	}
	if len(out) == 0 {
		return nil, errors.New("no voters given")
	}
	return out, nil
}

// serveSnapshot is GET /admin/v1/snapshot (an ADMIN of this node, public
// listener; access.go): the backup file as application/octet-stream. On
// a follower it answers 421 Misdirected Request naming the leader. A
// failure after the first byte cuts the stream: the file then fails its
// SHA-256, and the client discards it.
func (n *Node) serveSnapshot(w http.ResponseWriter, r *http.Request) {
	if !n.isServer() || n.raft == nil || n.raft.State() != raft.Leader {
		msg := "this node is not the Raft leader"
		if n.raft != nil {
			if _, id := n.raft.LeaderWithID(); id != "" {
				msg += "; ask the leader, node " + string(id)
			}
		}
		http.Error(w, msg, http.StatusMisdirectedRequest)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	cw := &countingWriter{w: w}
	if _, err := n.SnapshotTo(r.Context(), cw); err != nil {
		n.log.Error("snapshot for backup", "err", err)
		if cw.n == 0 {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		panic(http.ErrAbortHandler) // cut the stream: the file fails its checksum
	}
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// openVerified verifies the whole backup file, then opens it again and
// returns it positioned at the body.
func openVerified(file, kind string) (*os.File, *backupReader, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, nil, err
	}
	info, err := InspectBackup(f)
	if err == nil && info.Header.Kind != kind {
		err = fmt.Errorf("%s is a backup of the %s, not of the %s", file, info.Header.Kind, kind)
	}
	if err == nil {
		_, err = f.Seek(0, io.SeekStart)
	}
	var b *backupReader
	if err == nil {
		b, err = openBackup(f)
	}
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return f, b, nil
}

// HandoverBackupTo writes a backup of this node's handover store to w: the
// store's consistent badger stream (handover.Service.Backup), spooled to a
// temporary file first (the container names its size up front).
func (n *Node) HandoverBackupTo(ctx context.Context, w io.Writer) (*BackupHeader, error) {
	if n.handover == nil {
		return nil, errors.New("this node runs no handover service")
	}
	tmp, err := os.CreateTemp(n.cfg.DataDir, "handover-backup-*.tmp")
	if err != nil {
		return nil, err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	meta, err := n.handover.Backup(ctx, tmp)
	if err != nil {
		return nil, err
	}
	size, err := tmp.Seek(0, io.SeekCurrent)
	if err != nil {
		return nil, err
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	op, _ := n.reader.Operator()
	h := &BackupHeader{FormatVersion: BackupFormatVersion, Kind: KindHandovers, Index: meta.Commit, Operator: op, Node: n.cfg.NodeID,
		Created: time.Now().UTC(), Size: size, Org: n.cfg.OrgID, AuditSeq: meta.AuditHead.Seq, AuditHash: meta.AuditHead.Hash}
	if err := writeBackup(w, h, tmp); err != nil {
		return nil, err
	}
	return h, nil
}

// serveHandoverBackup is GET /admin/v1/handover-backup (an ADMIN of this
// node; access.go).
func (n *Node) serveHandoverBackup(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/octet-stream")
	cw := &countingWriter{w: w}
	if _, err := n.HandoverBackupTo(r.Context(), cw); err != nil {
		n.log.Error("handover backup", "err", err)
		if cw.n == 0 {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		panic(http.ErrAbortHandler)
	}
}

// RestoreHandoverBackup replaces the handover store of the STOPPED node
// with data dir dataDir by the backup in file (verified whole first); the
// old store is moved aside. See federation/handover/backup.go for what a
// restore loses and how the node handles it at its next start.
func RestoreHandoverBackup(file, dataDir string, now time.Time) (*BackupHeader, *handover.RestoreReport, error) {
	if _, err := os.Stat(filepath.Join(dataDir, "state")); err != nil {
		return nil, nil, fmt.Errorf("%s does not look like a node's data dir: %w", dataDir, err)
	}
	if err := checkStopped(dataDir); err != nil {
		return nil, nil, err
	}
	f, b, err := openVerified(file, KindHandovers)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	rep, err := handover.RestoreStore(filepath.Join(dataDir, "handover"), b.body, now)
	if err != nil {
		return nil, rep, err
	}
	h := b.Head
	return &h, rep, nil
}
