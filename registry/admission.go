package registry

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"

	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
)

// Admission is the write path on the leader, in front of the Writer: it
// parses and pre-verifies signed commands in parallel, answers retries of
// applied commands from their dedupe records, and proposes the rest
// through the group-commit Writer. Invalid commands get their error result
// without entering the Raft log. The FSM still decides every command when
// it is applied; admission only keeps what it would refuse out of the log.
type Admission struct {
	fsm *FSM
	w   *Writer

	// Gate, if set, is asked before anything is proposed: an error refuses
	// the request as a whole and is returned unchanged, and nothing enters
	// the Raft log. The node sets it to its disk guard (a full disk refuses
	// new writes). Commands answered without a proposal (retries of applied
	// commands, invalid commands) are answered regardless. Set it before
	// the first Publish; it must be safe for concurrent use.
	Gate func() error
}

// NewAdmission returns the admission for fsm, proposing through w.
func NewAdmission(fsm *FSM, w *Writer) *Admission { return &Admission{fsm: fsm, w: w} }

// Publish admits signed commands and waits until the admitted ones are
// applied. It returns one result per input, in order, and the index the
// results are visible at. Errors are those of Writer.Submit (ErrNotLeader
// when this node cannot propose: nothing was appended), those of Gate, or
// ErrInvalidArgument / ErrTooLarge for an empty or oversized request.
func (a *Admission) Publish(ctx context.Context, signed []string) ([]*registryv1.CommandResult, uint64, error) {
	if len(signed) == 0 {
		return nil, 0, fmt.Errorf("%w: no commands", ErrInvalidArgument)
	}
	if len(signed) > MaxCommandsPerRequest {
		return nil, 0, fmt.Errorf("%w: %d commands, at most %d a request", ErrTooLarge, len(signed), MaxCommandsPerRequest)
	}
	results := make([]*registryv1.CommandResult, len(signed))
	parsed := make([]*SignedCommand, len(signed))
	errs := make([]error, len(signed))
	// Parse and verify in parallel: signature checks dominate the cost.
	var wg sync.WaitGroup
	work := make(chan int)
	for w := 0; w < min(runtime.GOMAXPROCS(0), len(signed)); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				sc, err := ParseCommand(signed[i])
				if err == nil {
					err = a.fsm.PreVerify(sc)
				}
				if err == nil {
					// The version gate, as the FSM applies it: a kind
					// some server does not know yet stays out of the log.
					var level uint32
					if level, err = a.fsm.FeatureLevel(); err == nil {
						err = checkFeatureLevel(sc.Command, level)
					}
				}
				if err == nil {
					// A retry of an applied command: answer from the
					// dedupe record if this exact command was applied.
					if prev, _ := a.fsm.LookupResult(sc.Command.GetIssuer(), sc.Command.GetId()); prev != nil {
						// Unless the id was used for other content:
						// already_exists, as the FSM would answer.
						d, derr := CommandDigest(sc.Command)
						if derr == nil {
							derr = sameCommand(prev, d)
						}
						if derr != nil {
							results[i] = &registryv1.CommandResult{CommandId: sc.Command.GetId(), ErrorCode: ErrorCode(derr), ErrorMessage: derr.Error()}
						} else {
							results[i] = prev
						}
						continue
					}
				}
				parsed[i], errs[i] = sc, err
			}
		}()
	}
	for i := range signed {
		work <- i
	}
	close(work)
	wg.Wait()

	registering := map[string]bool{} // orgs whose record an earlier command in this request puts
	var submit []*SignedCommand
	var pos []int
	for i, sc := range parsed {
		if results[i] != nil {
			continue // answered from the dedupe record
		}
		err := errs[i]
		if err != nil && sc != nil && errors.Is(err, ErrUnknownKey) && registering[sc.Command.GetIssuer()] {
			err = nil // the key arrives with an earlier command: the FSM decides
		}
		if err != nil {
			results[i] = &registryv1.CommandResult{ErrorCode: ErrorCode(err), ErrorMessage: err.Error()}
			if sc != nil {
				results[i].CommandId = sc.Command.GetId()
			}
			continue
		}
		for _, m := range sc.Command.GetMutations() {
			if o := m.GetPutOrganisation(); o != nil {
				registering[o.GetId()] = true
			}
		}
		submit = append(submit, sc)
		pos = append(pos, i)
		a.fsm.parsed.put(sc) // parsed once: the FSM takes it when it applies the entry
	}
	var index uint64
	if len(submit) > 0 {
		if a.Gate != nil {
			if err := a.Gate(); err != nil {
				return nil, 0, err
			}
		}
		rs, idx, err := a.w.Submit(ctx, submit)
		if err != nil {
			return nil, 0, err
		}
		for j, r := range rs {
			results[pos[j]] = r
		}
		index = idx
	}
	if index == 0 {
		index = a.fsm.AppliedIndex()
	}
	return results, index, nil
}
