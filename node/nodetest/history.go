package nodetest

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"
)

// This file holds the history recorder and the sequential model for
// Jepsen-style linearizability tests of the registry: a set of registers
// (organisation records keyed by id) with a value (the record's name, unique
// per write) and a revision (the Raft index of the record's last change).
//
// Operations:
//
//   - read: a LINEARIZABLE GetOrganisation; returns the value and revision,
//     or not found. A read that failed is not recorded (it had no effect).
//   - put: an unconditional write of a new value.
//   - cas: a write with a precondition: "absent", or "at revision R" where R
//     is the revision of the value ExpectValue the client last saw.
//
// Write outcomes:
//
//   - OutOK: the write took effect at revision Rev (the command's Raft index).
//   - OutPreconditionFailed: the precondition did not hold; no effect.
//   - OutRefused: refused for a reason outside the model (a stale command,
//     never sent); no effect.
//   - OutUnknown: indeterminate (timeout, lost leadership, network error):
//     it may or may not have taken effect, at any time after its call. Like
//     porcupine's etcd model, such an operation returns at the end of the
//     history and the model lets it apply; linearized last, it changes
//     nothing anyone observed, which is the "did not happen" case.
//
// Soundness of the revision checks: each value is written once, so a value
// identifies its write. The revision a write got is learned from its own
// acknowledgement or from any read that saw the value (Analyze fills it into
// the write's input; a value seen with two revisions is a problem by
// itself). In a correct system writes to a key linearize in log order, so
// the revisions the model sees applied must not decrease: the model keeps
// the highest known revision applied so far (Floor) and refuses a write
// with a known revision below it. Revisions need not be unique: the writer
// batches concurrent commands into one Raft entry (group commit), and every
// change in an entry gets the entry's index as its revision.
//
// A conditional write is modelled as the API promises it ("the record is
// still the one I saw"): it holds iff the current value is ExpectValue. The
// registry checks the revision number only, so when two changes of a record
// share a revision, a CAS based on the first can succeed against the second:
// the checker reports that as a violation (see Analysis.SharedRevisions).

// OpKind is the kind of a register operation.
type OpKind uint8

const (
	OpRead OpKind = iota
	OpPut
	OpCAS
)

func (k OpKind) String() string {
	switch k {
	case OpRead:
		return "read"
	case OpPut:
		return "put"
	case OpCAS:
		return "cas"
	}
	return fmt.Sprintf("op(%d)", uint8(k))
}

// Outcome is how an operation ended.
type Outcome uint8

const (
	OutOK Outcome = iota
	OutPreconditionFailed
	OutRefused
	OutUnknown
)

func (o Outcome) String() string {
	switch o {
	case OutOK:
		return "ok"
	case OutPreconditionFailed:
		return "precondition-failed"
	case OutRefused:
		return "refused"
	case OutUnknown:
		return "unknown"
	}
	return fmt.Sprintf("outcome(%d)", uint8(o))
}

// RegInput is the input of one operation.
type RegInput struct {
	Kind OpKind
	Key  string
	// Value written (put, cas); unique per write.
	Value string
	// CAS precondition: Absent, or the record is still at (ExpectValue,
	// ExpectRev), the value and revision the client last saw.
	Absent      bool
	ExpectValue string
	ExpectRev   uint64
	// Rev is the revision the write got, if known from any observation;
	// filled in by Analyze (0: unknown).
	Rev uint64
}

// RegOutput is the output of one operation.
type RegOutput struct {
	Outcome Outcome
	// Reads: whether the record exists, its value and revision.
	Found bool
	Value string
	// Rev: the revision read, or the revision an acknowledged write got.
	Rev uint64
}

// OpMeta is diagnostic metadata of an operation (not used by the checker).
type OpMeta struct {
	Node     string // node(s) the request went to
	Attempts int
	Err      string // last error
	// AllUnavailable: every attempt of an indeterminate write failed with
	// the Unavailable code ("retry later").
	AllUnavailable bool
}

func (m OpMeta) String() string {
	s := m.Node
	if m.Attempts > 1 {
		s += fmt.Sprintf(" attempts=%d", m.Attempts)
	}
	if m.Err != "" {
		s += " err=" + m.Err
	}
	return s
}

// History records operations from concurrent clients.
type History struct {
	mu    sync.Mutex
	start time.Time
	ops   []porcupine.Operation
}

// NewHistory starts a history; Now is measured from here.
func NewHistory() *History { return &History{start: time.Now()} }

// Now is the time for Call and Return (monotonic nanoseconds).
func (h *History) Now() int64 { return int64(time.Since(h.start)) }

// Record adds one completed operation. For OutUnknown, ret is kept only in
// the metadata: Analyze moves the return to the end of the history.
func (h *History) Record(client int, in RegInput, call int64, out RegOutput, ret int64, meta OpMeta) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ops = append(h.ops, porcupine.Operation{ClientId: client, Input: in, Call: call, Output: out, Return: ret, Metadata: meta})
}

// Analysis is a history prepared for the checker, with what can be found
// without it.
type Analysis struct {
	// Ops for porcupine: write revisions filled in, indeterminate
	// operations returning at the end of the history.
	Ops []porcupine.Operation
	// Rev maps each value to the revision it was observed with.
	Rev map[string]uint64
	// Problems found directly: a value seen with two revisions, a value
	// read that no write wrote or whose write was refused, a value written
	// twice, a linearizable read answered from a record older than a write
	// acknowledged (or a read completed) before the read began.
	Problems []string
	// StaleReads counts reads that returned a revision older than one
	// acknowledged or read before the read was invoked (a subset of what
	// the checker finds; each also appears in Problems).
	StaleReads int

	Reads, Writes                                  int
	WritesOK, PreconditionFailed, Refused, Unknown int
	// SharedRevisions lists revisions that two or more different values of
	// one key were acknowledged or seen with ("key@revision: a, b"): several
	// changes of one record in one Raft entry.
	SharedRevisions []string
	// UnknownApplied: indeterminate writes later seen applied;
	// UnavailableApplied: of those, writes whose every attempt failed with
	// Unavailable.
	UnknownApplied, UnavailableApplied int
}

// Analyze prepares the history for the checker.
func (h *History) Analyze() *Analysis {
	h.mu.Lock()
	ops := slices.Clone(h.ops)
	h.mu.Unlock()
	a := &Analysis{Rev: map[string]uint64{}}
	problem := func(format string, args ...any) {
		if len(a.Problems) < 50 {
			a.Problems = append(a.Problems, fmt.Sprintf(format, args...))
		}
	}
	var end int64
	writer := map[string]int{} // value -> op index
	observe := func(value string, rev uint64, what string) {
		if prev, ok := a.Rev[value]; ok && prev != rev {
			problem("value %q seen with revision %d and %d (%s)", value, prev, rev, what)
			return
		}
		a.Rev[value] = rev
	}
	for i, op := range ops {
		in, out := op.Input.(RegInput), op.Output.(RegOutput)
		end = max(end, op.Call, op.Return)
		if in.Kind == OpRead {
			a.Reads++
			continue
		}
		a.Writes++
		if j, dup := writer[in.Value]; dup {
			problem("value %q written by operations %d and %d (test bug)", in.Value, j, i)
		}
		writer[in.Value] = i
		switch out.Outcome {
		case OutOK:
			a.WritesOK++
			observe(in.Value, out.Rev, "acknowledged write")
		case OutPreconditionFailed:
			a.PreconditionFailed++
		case OutRefused:
			a.Refused++
		case OutUnknown:
			a.Unknown++
		}
	}
	for _, op := range ops {
		in, out := op.Input.(RegInput), op.Output.(RegOutput)
		if in.Kind != OpRead || !out.Found {
			continue
		}
		observe(out.Value, out.Rev, "read of "+in.Key)
		j, ok := writer[out.Value]
		if !ok {
			problem("read of %s returned %q, which no operation wrote", in.Key, out.Value)
			continue
		}
		w := ops[j]
		win, wout := w.Input.(RegInput), w.Output.(RegOutput)
		if win.Key != in.Key {
			problem("read of %s returned %q, written to %s", in.Key, out.Value, win.Key)
		}
		if wout.Outcome == OutPreconditionFailed || wout.Outcome == OutRefused {
			problem("read of %s returned %q, whose write was refused (%s)", in.Key, out.Value, wout.Outcome)
		}
	}
	for i := range ops {
		op := &ops[i]
		in, out := op.Input.(RegInput), op.Output.(RegOutput)
		if in.Kind == OpRead {
			continue
		}
		if rev, ok := a.Rev[in.Value]; ok && out.Outcome != OutPreconditionFailed && out.Outcome != OutRefused {
			in.Rev = rev
			op.Input = in
			if out.Outcome == OutUnknown {
				a.UnknownApplied++
				if m, ok := op.Metadata.(OpMeta); ok && m.AllUnavailable {
					a.UnavailableApplied++
				}
			}
		}
		if out.Outcome == OutUnknown {
			op.Return = end + 1
		}
	}
	byRev := map[string][]string{}
	for v, rev := range a.Rev {
		j, ok := writer[v]
		if !ok {
			continue
		}
		id := fmt.Sprintf("%s@%d", ops[j].Input.(RegInput).Key, rev)
		byRev[id] = append(byRev[id], v)
	}
	for id, vs := range byRev {
		if len(vs) > 1 {
			sort.Strings(vs)
			a.SharedRevisions = append(a.SharedRevisions, id+": "+strings.Join(vs, ", "))
		}
	}
	sort.Strings(a.SharedRevisions)
	a.StaleReads = staleReads(ops, problem)
	a.Ops = ops
	return a
}

// staleReads finds reads that returned a revision below one that was
// acknowledged (a write) or returned (a read) before the read was invoked.
func staleReads(ops []porcupine.Operation, problem func(string, ...any)) int {
	type seen struct {
		at  int64
		rev uint64
		op  int
	}
	byKey := map[string][]seen{}
	for i, op := range ops {
		in, out := op.Input.(RegInput), op.Output.(RegOutput)
		switch {
		case in.Kind != OpRead && out.Outcome == OutOK:
			byKey[in.Key] = append(byKey[in.Key], seen{op.Return, out.Rev, i})
		case in.Kind == OpRead && out.Found:
			byKey[in.Key] = append(byKey[in.Key], seen{op.Return, out.Rev, i})
		}
	}
	// Prefix maxima over the return times.
	maxes := map[string][]seen{}
	for k, s := range byKey {
		sort.Slice(s, func(i, j int) bool { return s[i].at < s[j].at })
		m := make([]seen, len(s))
		for i := range s {
			m[i] = s[i]
			if i > 0 && m[i-1].rev > m[i].rev {
				m[i].rev, m[i].op = m[i-1].rev, m[i-1].op
			}
			m[i].at = s[i].at
		}
		maxes[k] = m
	}
	n := 0
	for _, op := range ops {
		in, out := op.Input.(RegInput), op.Output.(RegOutput)
		if in.Kind != OpRead {
			continue
		}
		m := maxes[in.Key]
		i := sort.Search(len(m), func(i int) bool { return m[i].at >= op.Call }) - 1
		if i < 0 {
			continue
		}
		got := uint64(0)
		if out.Found {
			got = out.Rev
		}
		if got < m[i].rev {
			n++
			prev := ops[m[i].op]
			problem("stale read of %s at [%d, %d]: revision %d (%q), but operation %v -> %v finished at %d with revision %d",
				in.Key, op.Call, op.Return, got, out.Value, prev.Input, prev.Output, prev.Return, m[i].rev)
		}
	}
	return n
}

// LostWrites returns the acknowledged writes that the final state does not
// reflect: for each key, an acknowledged write with a higher revision than
// the record finally stored (or any, if the record is missing). final maps
// each key to the record read at the end, after the faults were healed.
func (a *Analysis) LostWrites(final map[string]RegOutput) []string {
	var lost []string
	for _, op := range a.Ops {
		in, out := op.Input.(RegInput), op.Output.(RegOutput)
		if in.Kind == OpRead || out.Outcome != OutOK {
			continue
		}
		f, ok := final[in.Key]
		if !ok {
			continue // key not read at the end
		}
		if !f.Found || f.Rev < out.Rev {
			lost = append(lost, fmt.Sprintf("%s=%q acknowledged at revision %d; final record %q at revision %d (found %v)",
				in.Key, in.Value, out.Rev, f.Value, f.Rev, f.Found))
		}
	}
	return lost
}

// RegState is the model state of one register.
type RegState struct {
	Value string // "" = absent
	Rev   uint64 // revision of Value (0: not known)
	Floor uint64 // highest known revision applied so far
}

func (s RegState) holds(in RegInput) bool {
	if in.Absent {
		return s.Value == ""
	}
	return s.Value != "" && s.Value == in.ExpectValue && (s.Rev == 0 || s.Rev == in.ExpectRev)
}

func (s RegState) apply(in RegInput) (bool, RegState) {
	if in.Rev == 0 {
		return true, RegState{Value: in.Value, Floor: s.Floor}
	}
	if in.Rev < s.Floor {
		return false, s // revisions must not decrease in linearization order
	}
	return true, RegState{Value: in.Value, Rev: in.Rev, Floor: in.Rev}
}

func regStep(state, input, output interface{}) (bool, interface{}) {
	s, in, out := state.(RegState), input.(RegInput), output.(RegOutput)
	switch in.Kind {
	case OpRead:
		if out.Found != (s.Value != "") {
			return false, s
		}
		if out.Found && (out.Value != s.Value || (s.Rev != 0 && out.Rev != s.Rev)) {
			return false, s
		}
		return true, s
	case OpPut:
		switch out.Outcome {
		case OutOK, OutUnknown:
			return s.apply(in)
		case OutPreconditionFailed:
			return false, s // a put has no precondition
		default:
			return true, s
		}
	case OpCAS:
		holds := s.holds(in)
		switch out.Outcome {
		case OutOK:
			if !holds {
				return false, s
			}
			return s.apply(in)
		case OutPreconditionFailed:
			return !holds, s
		case OutUnknown:
			if holds {
				return s.apply(in)
			}
			return true, s
		default:
			return true, s
		}
	}
	return false, s
}

// RegisterModel is the porcupine model of the registry's organisation
// records, partitioned by key.
var RegisterModel = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		var keys []string
		for _, op := range history {
			k := op.Input.(RegInput).Key
			if _, ok := byKey[k]; !ok {
				keys = append(keys, k)
			}
			byKey[k] = append(byKey[k], op)
		}
		sort.Strings(keys)
		out := make([][]porcupine.Operation, 0, len(keys))
		for _, k := range keys {
			out = append(out, byKey[k])
		}
		return out
	},
	Init: func() interface{} { return RegState{} },
	Step: regStep,
	Hash: func(state interface{}) uint64 {
		s := state.(RegState)
		h := uint64(14695981039346656037)
		for i := 0; i < len(s.Value); i++ {
			h = (h ^ uint64(s.Value[i])) * 1099511628211
		}
		return h ^ s.Rev*31 ^ s.Floor*1000003
	},
	DescribeOperation: func(input, output interface{}) string {
		in, out := input.(RegInput), output.(RegOutput)
		var b strings.Builder
		switch in.Kind {
		case OpRead:
			fmt.Fprintf(&b, "read(%s) -> ", in.Key)
			if out.Found {
				fmt.Fprintf(&b, "%s@%d", out.Value, out.Rev)
			} else {
				b.WriteString("absent")
			}
			return b.String()
		case OpPut:
			fmt.Fprintf(&b, "put(%s, %s)", in.Key, in.Value)
		case OpCAS:
			if in.Absent {
				fmt.Fprintf(&b, "cas(%s, absent -> %s)", in.Key, in.Value)
			} else {
				fmt.Fprintf(&b, "cas(%s, %s@%d -> %s)", in.Key, in.ExpectValue, in.ExpectRev, in.Value)
			}
		}
		fmt.Fprintf(&b, " -> %s", out.Outcome)
		if out.Outcome == OutOK {
			fmt.Fprintf(&b, "@%d", out.Rev)
		} else if in.Rev != 0 {
			fmt.Fprintf(&b, " (seen @%d)", in.Rev)
		}
		return b.String()
	},
	DescribeState: func(state interface{}) string {
		s := state.(RegState)
		if s.Value == "" {
			return fmt.Sprintf("absent (floor %d)", s.Floor)
		}
		return fmt.Sprintf("%s@%d (floor %d)", s.Value, s.Rev, s.Floor)
	},
	DescribeOperationMetadata: func(info interface{}) string {
		if m, ok := info.(OpMeta); ok {
			return m.String()
		}
		return ""
	},
}

// CheckResult is the outcome of a linearizability check.
type CheckResult struct {
	Verdict porcupine.CheckResult // Ok, Illegal, or Unknown (timed out)
	Took    time.Duration
	// Visualization is the path of an HTML rendering of the history (set
	// when the verdict is not Ok and writing it succeeded).
	Visualization string
}

// Check runs porcupine on the analysed history within timeout. If the
// history is not linearizable (or the check timed out), it writes the
// visualization to a file under dir (a fresh temporary directory if empty)
// that outlives the test.
func (a *Analysis) Check(timeout time.Duration, dir string) CheckResult {
	start := time.Now()
	res := porcupine.CheckOperationsTimeout(RegisterModel, a.Ops, timeout)
	r := CheckResult{Verdict: res, Took: time.Since(start)}
	if res != porcupine.Ok {
		// Again with the partial linearizations the visualization shows.
		_, info := porcupine.CheckOperationsVerbose(RegisterModel, a.Ops, timeout)
		if p, err := writeVisualization(info, dir); err == nil {
			r.Visualization = p
		}
	}
	return r
}

func writeVisualization(info porcupine.LinearizationInfo, dir string) (string, error) {
	var err error
	if dir == "" {
		if dir, err = os.MkdirTemp("", "verbund-linearizability-*"); err != nil {
			return "", err
		}
	}
	p := filepath.Join(dir, "history.html")
	return p, porcupine.VisualizePath(RegisterModel, info, p)
}
