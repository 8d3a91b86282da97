package node

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"time"

	"github.com/verbund/verbund/registry"
)

// Config configures one node. Zero values take the defaults of
// DefaultConfig; Validate is called once by New.
type Config struct {
	// NodeID names the node in Raft and gossip (default: the OrgID).
	NodeID string
	// OrgID is the organisation this node runs for (ARS or slug).
	OrgID string
	// OrgName is used when the node registers itself at genesis.
	OrgName string
	// DataDir holds badger state, the Raft log, snapshots and keys.
	DataDir string
	// HTTPAddr serves the Connect/gRPC/gRPC-Web API and the web page.
	HTTPAddr string
	// RaftAddr is the Raft transport's listen address.
	RaftAddr string
	// RaftAdvertise is the address other servers dial (default RaftAddr).
	RaftAdvertise string
	// Bootstrap makes a node with no Raft state start a new one-voter
	// cluster and, with Genesis, register itself as the network operator.
	Bootstrap bool
	// Genesis: on an empty registry, sign and commit the genesis command
	// registering OrgID as the network operator with this node's key.
	Genesis bool
	// SampleData imports the embedded public sample data (11,004
	// municipalities, Munich's catalogue) on first start.
	SampleData bool

	// Raft timing; tests shorten these.
	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	CommitTimeout      time.Duration
	SnapshotThreshold  uint64
	SnapshotInterval   time.Duration
	TrailingLogs       uint64

	FSM    registry.FSMConfig
	Writer registry.WriterConfig

	// MaxRequestBytes bounds any API request body.
	MaxRequestBytes int
	// ReadTimeout bounds waiting for a consistent or min-index read.
	ReadTimeout time.Duration

	Logger *slog.Logger
}

// DefaultConfig returns the settings of a production node listening on
// loopback only; anything else must be configured explicitly.
func DefaultConfig() Config {
	return Config{
		DataDir:            "data",
		HTTPAddr:           "127.0.0.1:8080",
		RaftAddr:           "127.0.0.1:7000",
		HeartbeatTimeout:   1000 * time.Millisecond,
		ElectionTimeout:    1000 * time.Millisecond,
		LeaderLeaseTimeout: 500 * time.Millisecond,
		CommitTimeout:      5 * time.Millisecond,
		SnapshotThreshold:  16384,
		SnapshotInterval:   2 * time.Minute,
		TrailingLogs:       10240,
		FSM:                registry.DefaultFSMConfig(),
		MaxRequestBytes:    16 << 20,
		ReadTimeout:        5 * time.Second,
	}
}

// withDefaults fills zero fields from DefaultConfig.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	set := func(dst *time.Duration, v time.Duration) {
		if *dst == 0 {
			*dst = v
		}
	}
	if c.DataDir == "" {
		c.DataDir = d.DataDir
	}
	if c.HTTPAddr == "" {
		c.HTTPAddr = d.HTTPAddr
	}
	if c.RaftAddr == "" {
		c.RaftAddr = d.RaftAddr
	}
	if c.RaftAdvertise == "" {
		c.RaftAdvertise = c.RaftAddr
	}
	if c.NodeID == "" {
		c.NodeID = c.OrgID
	}
	set(&c.HeartbeatTimeout, d.HeartbeatTimeout)
	set(&c.ElectionTimeout, d.ElectionTimeout)
	set(&c.LeaderLeaseTimeout, d.LeaderLeaseTimeout)
	set(&c.CommitTimeout, d.CommitTimeout)
	set(&c.SnapshotInterval, d.SnapshotInterval)
	set(&c.ReadTimeout, d.ReadTimeout)
	if c.SnapshotThreshold == 0 {
		c.SnapshotThreshold = d.SnapshotThreshold
	}
	if c.TrailingLogs == 0 {
		c.TrailingLogs = d.TrailingLogs
	}
	if c.MaxRequestBytes == 0 {
		c.MaxRequestBytes = d.MaxRequestBytes
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Validate checks the configuration.
func (c Config) Validate() error {
	var errs []error
	if !registry.ValidOrgID(c.OrgID) {
		errs = append(errs, fmt.Errorf("org id %q must be a 12-digit ARS or a slug [a-z][a-z0-9-]{2,62}", c.OrgID))
	}
	if c.NodeID == "" || len(c.NodeID) > 64 {
		errs = append(errs, fmt.Errorf("node id %q must be 1-64 characters", c.NodeID))
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("data dir is required"))
	}
	for name, a := range map[string]string{"http addr": c.HTTPAddr, "raft addr": c.RaftAddr, "raft advertise": c.RaftAdvertise} {
		if _, _, err := net.SplitHostPort(a); err != nil {
			errs = append(errs, fmt.Errorf("%s %q: %w", name, a, err))
		}
	}
	if c.Genesis && !c.Bootstrap {
		errs = append(errs, errors.New("genesis needs bootstrap"))
	}
	if c.SampleData && !c.Genesis {
		errs = append(errs, errors.New("sample data is loaded by the genesis node only"))
	}
	return errors.Join(errs...)
}

func (c Config) path(parts ...string) string {
	return filepath.Join(append([]string{c.DataDir}, parts...)...)
}
