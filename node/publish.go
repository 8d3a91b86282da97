package node

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"

	"github.com/hashicorp/raft"

	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
	"github.com/verbund/verbund/registry"
)

// Publish parses and pre-verifies signed commands in parallel, proposes the
// valid ones through the group-commit writer and waits until they are
// applied. Invalid commands get their error result without entering the
// Raft log. It returns one result per input, in order.
func (n *Node) Publish(ctx context.Context, signed []string) ([]*registryv1.CommandResult, uint64, error) {
	if len(signed) == 0 {
		return nil, 0, fmt.Errorf("%w: no commands", registry.ErrInvalidArgument)
	}
	if len(signed) > registry.MaxCommandsPerRequest {
		return nil, 0, fmt.Errorf("%w: %d commands, at most %d a request", registry.ErrTooLarge, len(signed), registry.MaxCommandsPerRequest)
	}
	if !n.isServer() || n.raft.State() != raft.Leader {
		if !n.isServer() {
			return nil, 0, fmt.Errorf("%w: a member forwards writes", registry.ErrNotLeader)
		}
		leader, _ := n.raft.LeaderWithID()
		return nil, 0, fmt.Errorf("%w: leader is %q", registry.ErrNotLeader, leader)
	}
	results := make([]*registryv1.CommandResult, len(signed))
	parsed := make([]*registry.SignedCommand, len(signed))
	errs := make([]error, len(signed))
	// Parse and verify in parallel: signature checks dominate the cost.
	var wg sync.WaitGroup
	work := make(chan int)
	for w := 0; w < min(runtime.GOMAXPROCS(0), len(signed)); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				sc, err := registry.ParseCommand(signed[i])
				if err == nil {
					err = n.fsm.PreVerify(sc)
				}
				if err == nil {
					// A retry of an applied command: answer from the
					// dedupe record if this exact command was applied.
					if prev, _ := n.fsm.LookupResult(sc.Command.GetIssuer(), sc.Command.GetId()); prev != nil {
						results[i] = prev
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
	var submit []*registry.SignedCommand
	var pos []int
	for i, sc := range parsed {
		if results[i] != nil {
			continue // answered from the dedupe record
		}
		err := errs[i]
		if err != nil && sc != nil && errors.Is(err, registry.ErrUnknownKey) && registering[sc.Command.GetIssuer()] {
			err = nil // the key arrives with an earlier command: the FSM decides
		}
		if err != nil {
			results[i] = &registryv1.CommandResult{ErrorCode: registry.ErrorCode(err), ErrorMessage: err.Error()}
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
	}
	var index uint64
	if len(submit) > 0 {
		rs, idx, err := n.writer.Submit(ctx, submit)
		if err != nil {
			return nil, 0, err
		}
		for j, r := range rs {
			results[pos[j]] = r
		}
		index = idx
	}
	if index == 0 {
		index = n.fsm.AppliedIndex()
	}
	return results, index, nil
}
