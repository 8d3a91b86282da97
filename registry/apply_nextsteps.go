package registry

import (
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/dgraph-io/badger/v4"
	"google.golang.org/protobuf/proto"

	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
	"github.com/verbund/verbund/registry/textsearch"
)

// Next steps (issue 10): "what comes next" relations between catalogue
// services in a life situation, the data behind proactive offers. They are
// catalogue-like data: the network operator publishes the nationwide ones
// (state_code empty), the ACTIVE state agency of a state those for its
// state (rule next-steps-publisher). Every LeiKa key must be in the
// catalogue when the record is written.

// Limits of a NextSteps record.
const (
	MaxNextKeys     = 20
	MaxNextStepNote = 500
)

var reNextStepsID = regexp.MustCompile(`^[a-z0-9-]{1,64}$`)

const ruleNextSteps = "next-steps-publisher"

// ValidateNextSteps checks a NextSteps record's structure: id, life
// situation, LeiKa keys (1-20 distinct next keys, none the trigger), state
// code and note.
func ValidateNextSteps(n *registryv1.NextSteps) error {
	if n == nil {
		return invalid("next steps record is empty")
	}
	if !reNextStepsID.MatchString(n.GetId()) {
		return invalid("next steps id %q must be 1-64 characters of [a-z0-9-]", n.GetId())
	}
	if err := checkText("next steps "+n.GetId()+": life_situation", n.GetLifeSituation(), MaxNameLen, true); err != nil {
		return err
	}
	if !ValidLeiKa(n.GetTriggerLeikaKey()) {
		return invalid("next steps %s: trigger LeiKa key %q must match ^99\\d{12}$", n.GetId(), n.GetTriggerLeikaKey())
	}
	keys := n.GetNextLeikaKeys()
	if len(keys) == 0 || len(keys) > MaxNextKeys {
		return invalid("next steps %s: %d next services, want 1-%d", n.GetId(), len(keys), MaxNextKeys)
	}
	for i, k := range keys {
		if !ValidLeiKa(k) {
			return invalid("next steps %s: next LeiKa key %q must match ^99\\d{12}$", n.GetId(), k)
		}
		if k == n.GetTriggerLeikaKey() {
			return invalid("next steps %s: %s is its own next step", n.GetId(), k)
		}
		if slices.Contains(keys[:i], k) {
			return invalid("next steps %s: next LeiKa key %s is listed twice", n.GetId(), k)
		}
	}
	if s := n.GetStateCode(); s != "" && !reState.MatchString(s) {
		return invalid("next steps %s: state code %q must be 2 digits (or empty: nationwide)", n.GetId(), s)
	}
	if len(n.GetNote()) > MaxNextStepNote {
		return fmt.Errorf("%w: next steps %s: note is %d bytes, at most %d", ErrTooLarge, n.GetId(), len(n.GetNote()), MaxNextStepNote)
	}
	return checkText("next steps "+n.GetId()+": note", n.GetNote(), MaxNextStepNote, false)
}

func clearNextStepsMeta(m proto.Message) {
	n := m.(*registryv1.NextSteps)
	n.Revision, n.UpdatedAtUnixMs, n.UpdatedBy = 0, 0, ""
}

// checkNextStepsPublisher enforces rule next-steps-publisher: nationwide
// relations (state "") are the ACTIVE network operator's, a state's the
// ACTIVE state agency's of that state.
func (a *applyCtx) checkNextStepsPublisher(state, what string) error {
	iss := a.issuer
	active := iss != nil && iss.GetStatus() == statusActive
	if state == "" {
		if active && a.operator != "" && iss.GetId() == a.operator {
			return nil
		}
		return ruleErr(ErrPermissionDenied, ruleNextSteps, "%s may not %s: nationwide next steps are published by the network operator %s", a.cmd.GetIssuer(), what, a.operator)
	}
	if active && iss.GetKind() == kindStateAgency && stateOf(iss) == state {
		return nil
	}
	return ruleErr(ErrPermissionDenied, ruleNextSteps, "%s may not %s: next steps of state %s are published by an ACTIVE state agency of that state", a.cmd.GetIssuer(), what, state)
}

func (a *applyCtx) putNextSteps(n *registryv1.NextSteps, pre *registryv1.Precondition) error {
	if err := a.checkNextStepsPublisher(n.GetStateCode(), "publish next steps "+n.GetId()); err != nil {
		return err
	}
	old := &registryv1.NextSteps{}
	exists, err := a.st.getProto(nextStepsKey(n.GetId()), old)
	if err != nil {
		return err
	}
	if exists && old.GetStateCode() != n.GetStateCode() {
		// Replacing moves the record between scopes: the issuer must be
		// entitled to the old one too.
		if err := a.checkNextStepsPublisher(old.GetStateCode(), "replace next steps "+n.GetId()); err != nil {
			return err
		}
	}
	if err := checkPrecondition(pre, exists, old.GetRevision(), "next steps "+n.GetId()); err != nil {
		return err
	}
	for _, k := range append([]string{n.GetTriggerLeikaKey()}, n.GetNextLeikaKeys()...) {
		if ok, err := a.st.has(serviceKey(k)); err != nil {
			return err
		} else if !ok {
			return fmt.Errorf("%w: next steps %s: service %s is not in the catalogue", ErrNotFound, n.GetId(), k)
		}
	}
	if err := a.checkStale(exists, old.GetUpdatedAtUnixMs(), "next steps "+n.GetId()); err != nil {
		return err
	}
	if exists && sameContent(old, n, clearNextStepsMeta) {
		a.rev = old.GetRevision()
		return nil
	}
	rec := proto.Clone(n).(*registryv1.NextSteps)
	rec.Revision, rec.UpdatedAtUnixMs, rec.UpdatedBy = a.nextRevision(), a.cmd.GetIssuedAtUnixMs(), a.cmd.GetIssuer()
	if exists && old.GetTriggerLeikaKey() != rec.GetTriggerLeikaKey() {
		a.st.del(nextTriggerKey(old.GetTriggerLeikaKey(), old.GetId()))
	}
	a.st.set(nextTriggerKey(rec.GetTriggerLeikaKey(), rec.GetId()), nil)
	return a.st.setProto(nextStepsKey(rec.GetId()), rec)
}

func (a *applyCtx) deleteNextSteps(id string, pre *registryv1.Precondition) error {
	old := &registryv1.NextSteps{}
	exists, err := a.st.getProto(nextStepsKey(id), old)
	if err != nil {
		return err
	}
	if err := checkPrecondition(pre, exists, old.GetRevision(), "next steps "+id); err != nil {
		return err
	}
	if !exists {
		return fmt.Errorf("%w: next steps %s", ErrNotFound, id)
	}
	if err := a.checkNextStepsPublisher(old.GetStateCode(), "withdraw next steps "+id); err != nil {
		return err
	}
	if err := a.checkStale(true, old.GetUpdatedAtUnixMs(), "next steps "+id); err != nil {
		return err
	}
	a.st.del(nextStepsKey(id))
	a.st.del(nextTriggerKey(old.GetTriggerLeikaKey(), id))
	return nil
}

// nextStepsText describes a record for history entries.
func nextStepsText(n *registryv1.NextSteps) string {
	scope := "nationwide"
	if n.GetStateCode() != "" {
		scope = "state " + n.GetStateCode()
	}
	return fmt.Sprintf("%s (%s, %s): after %s offer %s", n.GetId(), n.GetLifeSituation(), scope,
		n.GetTriggerLeikaKey(), strings.Join(n.GetNextLeikaKeys(), ", "))
}

// ListNextSteps returns the next-steps records for a trigger service:
// those of the area's state first (area: an ARS or AGS, optional), then
// the nationwide ones, each group in id order; with a life situation
// (case- and umlaut-insensitive) only its records.
func (r *Reader) ListNextSteps(trigger, lifeSituation, area string) ([]*registryv1.NextSteps, uint64, error) {
	if !ValidLeiKa(trigger) {
		return nil, 0, invalid("LeiKa key %q must match ^99\\d{12}$", trigger)
	}
	if area != "" && !ValidARS(area) && !ValidAGS(area) {
		return nil, 0, invalid("area %q must be a 12-digit ARS or an 8-digit AGS", area)
	}
	if len(lifeSituation) > MaxNameLen {
		return nil, 0, fmt.Errorf("%w: life situation too long", ErrTooLarge)
	}
	state := ""
	if area != "" {
		state = area[:2]
	}
	ls := textsearch.Fold(lifeSituation)
	var ofState, nationwide []*registryv1.NextSteps
	idx, err := r.view(func(st *stage) error {
		it := st.txn.NewIterator(badger.IteratorOptions{Prefix: nextTriggerPrefix(trigger)})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			id := string(it.Item().Key()[len(nextTriggerPrefix(trigger)):])
			n := &registryv1.NextSteps{}
			if ok, err := st.getProto(nextStepsKey(id), n); err != nil {
				return err
			} else if !ok {
				continue
			}
			if ls != "" && textsearch.Fold(n.GetLifeSituation()) != ls {
				continue
			}
			switch n.GetStateCode() {
			case "":
				nationwide = append(nationwide, n)
			case state:
				ofState = append(ofState, n)
			}
		}
		return nil
	})
	return append(ofState, nationwide...), idx, err
}
