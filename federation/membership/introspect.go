package membership

import (
	"reflect"
	"sync"
	"time"
	"unsafe"

	"github.com/hashicorp/memberlist"
)

// memberlist keeps each node's state (alive, suspect, dead, left) and the
// time it last changed in an unexported nodeState that embeds the exported
// memberlist.Node. Node.State exists but memberlist never updates it: it is
// shadowed by nodeState.State (hashicorp/memberlist#266), so
// Memberlist.Members() reports every node as alive and leaves out dead and
// left ones, and the EventDelegate cannot tell a failure from a leave.
//
// To report real states this file reads nodeState under memberlist's own
// node lock. The layout is checked field by field (names, types, embedding
// at offset 0) when the package loads; if a memberlist upgrade changes it,
// introspection is switched off and the package falls back to what the
// public API gives (suspect shows as alive, left as dead). A test fails in
// that case so the upgrade is noticed.

var mlLayout struct {
	ok          bool
	lockOff     uintptr // Memberlist.nodeLock (sync.RWMutex)
	nodesOff    uintptr // Memberlist.nodes ([]*nodeState)
	stateOff    uintptr // nodeState.State (memberlist.NodeStateType)
	changeOff   uintptr // nodeState.StateChange (time.Time)
	whyDisabled string
}

func init() { mlLayout.whyDisabled = probeLayout() }

func probeLayout() string {
	mt := reflect.TypeFor[memberlist.Memberlist]()
	lock, ok := mt.FieldByName("nodeLock")
	if !ok || len(lock.Index) != 1 || lock.Type != reflect.TypeFor[sync.RWMutex]() {
		return "Memberlist.nodeLock not found"
	}
	nodes, ok := mt.FieldByName("nodes")
	if !ok || len(nodes.Index) != 1 || nodes.Type.Kind() != reflect.Slice ||
		nodes.Type.Elem().Kind() != reflect.Pointer || nodes.Type.Elem().Elem().Kind() != reflect.Struct {
		return "Memberlist.nodes not found"
	}
	st := nodes.Type.Elem().Elem()
	node, ok := st.FieldByName("Node")
	if !ok || !node.Anonymous || node.Offset != 0 || node.Type != reflect.TypeFor[memberlist.Node]() {
		return "nodeState does not embed Node first"
	}
	state, ok := st.FieldByName("State")
	if !ok || len(state.Index) != 1 || state.Type != reflect.TypeFor[memberlist.NodeStateType]() {
		return "nodeState.State not found"
	}
	change, ok := st.FieldByName("StateChange")
	if !ok || len(change.Index) != 1 || change.Type != reflect.TypeFor[time.Time]() {
		return "nodeState.StateChange not found"
	}
	mlLayout.lockOff, mlLayout.nodesOff = lock.Offset, nodes.Offset
	mlLayout.stateOff, mlLayout.changeOff = state.Offset, change.Offset
	mlLayout.ok = true
	return ""
}

// nodeView is one node as memberlist sees it right now.
type nodeView struct {
	node  memberlist.Node // Meta copied; State not meaningful
	state memberlist.NodeStateType
	since time.Time
}

// viewNodes returns memberlist's node table with each node's real state,
// including dead and left nodes it has not reaped yet. It must not be called
// from a memberlist callback (memberlist holds the node lock there).
func viewNodes(l *memberlist.Memberlist) []nodeView {
	base := unsafe.Pointer(l)
	lock := (*sync.RWMutex)(unsafe.Add(base, mlLayout.lockOff))
	lock.RLock()
	defer lock.RUnlock()
	// nodeState embeds Node at offset 0, so *nodeState and *Node are the
	// same address and a []*nodeState can be read as []*Node.
	nodes := *(*[]*memberlist.Node)(unsafe.Add(base, mlLayout.nodesOff))
	out := make([]nodeView, 0, len(nodes))
	for _, n := range nodes {
		v := nodeView{node: *n}
		v.node.Meta = append([]byte(nil), n.Meta...)
		v.state, v.since = nodeStateOf(n)
		out = append(out, v)
	}
	return out
}

// nodeStateOf reads the real state of a node memberlist handed out (a Node
// inside its nodeState). The caller must hold memberlist's node lock, as
// memberlist does while it calls the EventDelegate.
func nodeStateOf(n *memberlist.Node) (memberlist.NodeStateType, time.Time) {
	p := unsafe.Pointer(n)
	return *(*memberlist.NodeStateType)(unsafe.Add(p, mlLayout.stateOff)),
		*(*time.Time)(unsafe.Add(p, mlLayout.changeOff))
}
