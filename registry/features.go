package registry

import (
	"errors"
	"fmt"
	"maps"
	"sync"

	"google.golang.org/protobuf/proto"

	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
)

// The version gate. The cluster's feature level is an integer recorded in
// the registry state (keyFeatureLevel; absent = BaseFeatureLevel). Every
// command kind (Mutation oneof case) names the level it needs in kindLevels;
// admission refuses a command whose kinds need a higher level than the
// recorded one, and so does the FSM, deterministically from the recorded
// level, so a replica that does not know a kind never sees it applied by
// the others. The level is raised only by a LogEntry carrying
// raise_feature_level, which the leader proposes when every server in the
// Raft configuration advertises support for it (node/features.go). It is
// never lowered.
//
// Adding a command kind: give it the next level here (never change the
// level of a kind that was released), and raise SupportedFeatureLevel with
// it. Nodes of the previous version advertise the lower level, so the new
// kind is refused until the last of them is upgraded.

// BaseFeatureLevel is the level of a registry that never recorded one: the
// command kinds that existed when the gate was introduced (v0.8.0).
const BaseFeatureLevel uint32 = 1

// ErrFeatureLevel marks a command refused because the cluster's feature
// level is below the one its kind needs (some server is not upgraded yet).
// Nothing was applied; the same command succeeds once the level is raised.
var ErrFeatureLevel = errors.New("feature level not reached")

// CodeFeatureLevel is the error code of ErrFeatureLevel.
const CodeFeatureLevel = "feature_level"

var (
	levelsMu sync.RWMutex
	// kindLevels: Mutation oneof field name -> the feature level it needs.
	// Level 1 = the kinds that existed in v0.8.0.
	kindLevels = map[string]uint32{
		"put_organisation":       1,
		"put_service":            1,
		"put_offering":           1,
		"delete_offering":        1,
		"put_audit_head":         1,
		"request_join":           1,
		"change_status":          1,
		"recover_keys":           1,
		"put_authorisation":      1,
		"withdraw_authorisation": 1,
		// Level 2 (issue 10): "what comes next" relations as registry data
		// (and the place index, see PlaceIndexLevel).
		"put_next_steps":    2,
		"delete_next_steps": 2,
	}
)

// MutationKind is the name of m's oneof case ("put_service", ...), or ""
// if none is set.
func MutationKind(m *registryv1.Mutation) string {
	od := m.ProtoReflect().Descriptor().Oneofs().ByName("op")
	fd := m.ProtoReflect().WhichOneof(od)
	if fd == nil {
		return ""
	}
	return string(fd.Name())
}

// KindLevel is the feature level kind needs. A kind missing from the table
// needs a level no cluster reaches: a kind must be registered to be used.
func KindLevel(kind string) uint32 {
	levelsMu.RLock()
	defer levelsMu.RUnlock()
	if l, ok := kindLevels[kind]; ok {
		return l
	}
	return ^uint32(0)
}

// KindLevels returns a copy of the table (kind -> level).
func KindLevels() map[string]uint32 {
	levelsMu.RLock()
	defer levelsMu.RUnlock()
	return maps.Clone(kindLevels)
}

// SupportedFeatureLevel is the highest level this binary implements: the
// highest level in the table. A node advertises it (gossip) unless
// configured lower.
func SupportedFeatureLevel() uint32 {
	levelsMu.RLock()
	defer levelsMu.RUnlock()
	l := BaseFeatureLevel
	for _, v := range kindLevels {
		l = max(l, v)
	}
	return l
}

// SetKindLevelForTest registers kind at level and returns a function that
// restores the table. Only for tests that need a kind of a level above the
// released ones; never call it in production code: every
// replica must use the same table.
func SetKindLevelForTest(kind string, level uint32) (restore func()) {
	levelsMu.Lock()
	defer levelsMu.Unlock()
	old, had := kindLevels[kind]
	kindLevels[kind] = level
	return func() {
		levelsMu.Lock()
		defer levelsMu.Unlock()
		if had {
			kindLevels[kind] = old
		} else {
			delete(kindLevels, kind)
		}
	}
}

// RequiredLevel is the highest level any mutation of cmd needs, and the
// kind that needs it.
func RequiredLevel(cmd *registryv1.Command) (uint32, string) {
	var level uint32
	var kind string
	for _, m := range cmd.GetMutations() {
		k := MutationKind(m)
		if l := KindLevel(k); l > level {
			level, kind = l, k
		}
	}
	return level, kind
}

// checkFeatureLevel refuses cmd if a kind in it needs more than level.
func checkFeatureLevel(cmd *registryv1.Command, level uint32) error {
	need, kind := RequiredLevel(cmd)
	if need <= level {
		return nil
	}
	if need == ^uint32(0) {
		return fmt.Errorf("%w: command %s: mutation kind %q is unknown to this version", ErrFeatureLevel, cmd.GetId(), kind)
	}
	return fmt.Errorf("%w: command %s: %s needs cluster feature level %d, the cluster is at %d (a server of an older version is still in the cluster; upgrade every server, the leader then raises the level)",
		ErrFeatureLevel, cmd.GetId(), kind, need, level)
}

// featureLevel reads the recorded level from st.
func featureLevel(st *stage) (uint32, error) {
	l, err := st.getIndex(keyFeatureLevel)
	if err != nil {
		return 0, err
	}
	if l == 0 {
		return BaseFeatureLevel, nil
	}
	return uint32(l), nil
}

// raiseFeatureLevel records level if it is higher than the current one.
// Deterministic: depends only on the state and the log entry.
func (f *FSM) raiseFeatureLevel(st *stage, index uint64, level uint32) {
	cur, err := featureLevel(st)
	if err != nil {
		f.fatal(err)
	}
	if level <= cur {
		f.log.Info("feature level not lowered or unchanged", "index", index, "recorded", cur, "proposed", level)
		return
	}
	st.set([]byte(keyFeatureLevel), u64(uint64(level)))
	if cur < PlaceIndexLevel && level >= PlaceIndexLevel {
		if err := buildPlaceIndex(st); err != nil {
			f.fatal(err)
		}
	}
	f.log.Info("cluster feature level raised", "index", index, "from", cur, "to", level)
}

// FeatureLevel is the cluster's feature level as recorded in the applied
// state.
func (f *FSM) FeatureLevel() (uint32, error) {
	txn := f.db.NewTransaction(false)
	defer txn.Discard()
	return featureLevel(newStage(nil, txn))
}

// FeatureLevel is the cluster's feature level in the state r reads (on a
// member: as replicated from the voters).
func (r *Reader) FeatureLevel() (uint32, error) {
	var l uint32
	_, err := r.view(func(st *stage) error {
		var err error
		l, err = featureLevel(st)
		return err
	})
	return l, err
}

// RaiseFeatureLevelEntry is the log entry that raises the cluster's feature
// level to level (the leader proposes it through raft.Apply).
func RaiseFeatureLevelEntry(level uint32, proposedAtUnixMs int64) ([]byte, error) {
	return proto.Marshal(&registryv1.LogEntry{RaiseFeatureLevel: level, ProposedAtUnixMs: proposedAtUnixMs})
}

// FeedBytesLevel is the cluster feature level from which the change feed
// is also bounded by bytes (FSMConfig.FeedRetentionBytes).
const FeedBytesLevel uint32 = 2
