package membership

import (
	"encoding/binary"
	"errors"
	"fmt"
	"unicode/utf8"

	"github.com/hashicorp/memberlist"
)

// Role is a node's part in the federation's Raft group.
type Role string

const (
	RoleVoter   Role = "voter"   // Raft voter
	RoleReplica Role = "replica" // non-voting Raft replica
	RoleMember  Role = "member"  // plain gossip member, no Raft data
)

// Valid reports whether r is one of the known roles.
func (r Role) Valid() bool {
	switch r {
	case RoleVoter, RoleReplica, RoleMember:
		return true
	}
	return false
}

// MetaMaxSize is the largest encoded Meta memberlist carries (its node meta
// limit).
const MetaMaxSize = memberlist.MetaMaxSize

// metaFormatV1 is the first byte of an encoded Meta; metaFormatV2 (a Meta
// with PublicAPI) appends PublicAPI after the fields of format 1, which
// decoders of format 1 ignore.
const (
	metaFormatV1 = 1
	metaFormatV2 = 2
)

var (
	// ErrMetaTooLarge is returned (wrapped) when a Meta encodes to more than
	// MetaMaxSize bytes.
	ErrMetaTooLarge = errors.New("membership: meta too large")
	// ErrInvalidMeta is returned (wrapped) for a Meta that is not acceptable
	// or cannot be decoded.
	ErrInvalidMeta = errors.New("membership: invalid meta")
)

// Meta is what a node tells the others about itself through gossip. It is
// self-declared: anyone holding the gossip key can claim anything here, so
// never authorise on it (see the package documentation).
type Meta struct {
	NodeID   string
	OrgID    string
	Role     Role
	APIAddr  string
	RaftAddr string
	Version  string
	// PublicAPI is the node's API for clients (APIAddr is the mutual-TLS
	// address other nodes call). Appended in format 1 after Version; older
	// nodes ignore it, and a node that sends none leaves it "" (format 1).
	PublicAPI string
}

func (m Meta) fields() []string {
	return []string{m.NodeID, m.OrgID, string(m.Role), m.APIAddr, m.RaftAddr, m.Version, m.PublicAPI}
}

// Validate checks that m is complete and encodes within MetaMaxSize.
func (m Meta) Validate() error {
	_, err := m.Encode()
	return err
}

// Encode validates m and returns its compact binary form: a format byte (1,
// or 2 with PublicAPI) followed by NodeID, OrgID, Role, APIAddr, RaftAddr,
// Version (and PublicAPI), each as a
// uvarint length and the UTF-8 bytes. Later formats may only append fields,
// so that older decoders keep working.
func (m Meta) Encode() ([]byte, error) {
	if m.NodeID == "" {
		return nil, fmt.Errorf("%w: NodeID is empty", ErrInvalidMeta)
	}
	if !m.Role.Valid() {
		return nil, fmt.Errorf("%w: role %q is not one of %q, %q, %q", ErrInvalidMeta, m.Role, RoleVoter, RoleReplica, RoleMember)
	}
	names := [...]string{"NodeID", "OrgID", "Role", "APIAddr", "RaftAddr", "Version", "PublicAPI"}
	buf := make([]byte, 0, 64)
	fields := m.fields()
	if m.PublicAPI == "" {
		buf = append(buf, metaFormatV1)
		fields = fields[:6]
	} else {
		buf = append(buf, metaFormatV2)
	}
	for i, f := range fields {
		if !utf8.ValidString(f) {
			return nil, fmt.Errorf("%w: %s is not valid UTF-8", ErrInvalidMeta, names[i])
		}
		buf = binary.AppendUvarint(buf, uint64(len(f)))
		buf = append(buf, f...)
	}
	if len(buf) > MetaMaxSize {
		return nil, fmt.Errorf("%w: encodes to %d bytes, the limit is %d", ErrMetaTooLarge, len(buf), MetaMaxSize)
	}
	return buf, nil
}

// DecodeMeta parses the output of Meta.Encode. Bytes after the known fields
// are ignored (fields appended by newer versions).
func DecodeMeta(b []byte) (Meta, error) {
	if len(b) == 0 {
		return Meta{}, fmt.Errorf("%w: empty", ErrInvalidMeta)
	}
	if b[0] < metaFormatV1 {
		return Meta{}, fmt.Errorf("%w: unknown format %d", ErrInvalidMeta, b[0])
	}
	rest := b[1:]
	var f [6]string
	for i := range f {
		n, k := binary.Uvarint(rest)
		if k <= 0 || n > uint64(len(rest)-k) {
			return Meta{}, fmt.Errorf("%w: truncated", ErrInvalidMeta)
		}
		s := rest[k : k+int(n)]
		if !utf8.Valid(s) {
			return Meta{}, fmt.Errorf("%w: field %d is not valid UTF-8", ErrInvalidMeta, i)
		}
		f[i] = string(s)
		rest = rest[k+int(n):]
	}
	m := Meta{NodeID: f[0], OrgID: f[1], Role: Role(f[2]), APIAddr: f[3], RaftAddr: f[4], Version: f[5]}
	// Optional fields appended later (absent from older nodes' meta).
	if b[0] >= metaFormatV2 {
		n, k := binary.Uvarint(rest)
		if k <= 0 || n > uint64(len(rest)-k) || !utf8.Valid(rest[k:k+int(n)]) {
			return Meta{}, fmt.Errorf("%w: PublicAPI truncated or not UTF-8", ErrInvalidMeta)
		}
		m.PublicAPI = string(rest[k : k+int(n)])
	}
	if m.NodeID == "" {
		return Meta{}, fmt.Errorf("%w: NodeID is empty", ErrInvalidMeta)
	}
	return m, nil
}
