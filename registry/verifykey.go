package registry

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/verbund/verbund/keys"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
)

// loadOrg returns the stored record of organisation id, or nil.
func loadOrg(st *stage, id string) (*registryv1.Organisation, error) {
	o := &registryv1.Organisation{}
	ok, err := st.getProto(orgKey(id), o)
	if err != nil || !ok {
		return nil, err
	}
	return o, nil
}

// neverApproved reports whether an organisation has not been approved yet
// (listed, join pending or declined): it signs nothing but a join request.
func neverApproved(o *registryv1.Organisation) bool {
	switch o.GetStatus() {
	case statusUnspecified, statusRegistered, statusPending, statusDeclined:
		return true
	}
	return false
}

// joinRequest returns the join request of cmd if it is the command's only
// mutation and names the issuer (the only form in which it is valid).
func joinRequest(cmd *registryv1.Command) *registryv1.Organisation {
	if len(cmd.GetMutations()) != 1 {
		return nil
	}
	j := cmd.GetMutations()[0].GetRequestJoin()
	if j == nil || j.GetId() != cmd.GetIssuer() {
		return nil
	}
	return j
}

// selfRecovery reports whether cmd's only mutation is a key recovery of the
// issuer itself.
func selfRecovery(cmd *registryv1.Command) bool {
	if len(cmd.GetMutations()) != 1 {
		return false
	}
	r := cmd.GetMutations()[0].GetRecoverKeys()
	return r != nil && r.GetOrganisationId() == cmd.GetIssuer()
}

// commandKey returns the key a signed command must verify against, given the
// issuer's stored record org (nil if it has none) and the operator's id (""
// before genesis), at moment at. Besides the key rule (signingKey) there are
// three paths, each verified against a key carried in or held for the
// command itself:
//   - genesis: the operator's self-signed record in the command;
//   - a join request (the command's only mutation, for the issuer) of an
//     organisation that is new or not approved yet: a signing key in the
//     request (proof of possession);
//   - a key recovery of the network operator itself (the only mutation),
//     signed with its "rec" recovery key.
//
// Pure: the same inputs give the same answer on every replica.
func commandKey(org *registryv1.Organisation, operator string, sc *SignedCommand, at keys.Moment) (*registryv1.PublicKey, error) {
	cmd := sc.Command
	if j := joinRequest(cmd); j != nil && operator != "" && (org == nil || neverApproved(org)) {
		for _, pk := range j.GetKeys() {
			if pk.GetKid() == sc.KID && pk.GetUse() == keys.UseSig && pk.GetStatus() == registryv1.KeyStatus_KEY_STATUS_ACTIVE {
				return pk, nil
			}
		}
		return nil, fmt.Errorf("%w: rule %s: a join request must be signed with an active signing key it carries (kid %q is not one)", ErrUnknownKey, ruleJoin, sc.KID)
	}
	if org == nil {
		if operator != "" {
			return nil, fmt.Errorf("%w: issuer %s is not registered", ErrUnknownKey, cmd.GetIssuer())
		}
		return genesisKey(cmd, sc.KID)
	}
	for _, pk := range org.GetKeys() {
		if pk.GetKid() != sc.KID || pk.GetUse() != keys.UseRec {
			continue
		}
		if org.GetId() != operator || !selfRecovery(cmd) {
			return nil, ruleErr(ErrPermissionDenied, ruleRecovery, "recovery key %q signs nothing but the network operator's own recover_keys, as the command's only mutation", sc.KID)
		}
		k, err := keys.RecoveryKeyAt(org, sc.KID, at)
		if err != nil {
			return nil, keyRuleErr(org, err)
		}
		return k, nil
	}
	return signingKey(org, sc.KID, at)
}

// signingKey finds the key a command must verify against, by the key rule
// (keys.SigningKeyAt) at moment at: the index and proposal time of the log
// entry that records the command. An issuer that is not approved,
// suspended or revoked is ErrPermissionDenied naming the rule; every other
// refusal is ErrUnknownKey.
func signingKey(org *registryv1.Organisation, kid string, at keys.Moment) (*registryv1.PublicKey, error) {
	pk, err := keys.SigningKeyAt(org, kid, at)
	if err != nil {
		return nil, keyRuleErr(org, err)
	}
	return pk, nil
}

func keyRuleErr(org *registryv1.Organisation, err error) error {
	if !errors.Is(err, keys.ErrOrgInactive) {
		return fmt.Errorf("%w: %v", ErrUnknownKey, err)
	}
	switch {
	case neverApproved(org):
		return ruleErr(ErrPermissionDenied, ruleNotApproved, "%v: it signs nothing until its approver approves it", err)
	case final(org.GetStatus()):
		return ruleErr(ErrPermissionDenied, ruleRevoked, "%v", err)
	default:
		return ruleErr(ErrPermissionDenied, ruleSuspended, "%v: its new writes are refused", err)
	}
}

// CommandDigest returns the SHA-256 of cmd's deterministic protobuf
// encoding: what the registry's dedupe record keeps (command_sha256) to tell
// a retry of a command from a reuse of its id for other content.
//
// The time of signing is left out: a command signed again later with the
// same id and the same mutations is a retry, not other content.
func CommandDigest(cmd *registryv1.Command) ([]byte, error) {
	c := proto.Clone(cmd).(*registryv1.Command)
	c.IssuedAtUnixMs = 0
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("encode command: %w", err)
	}
	d := sha256.Sum256(b)
	return d[:], nil
}

// sameCommand refuses, with ErrAlreadyExists, a command whose digest differs
// from the one its id was first applied with (records without a digest
// predate it and count as the same).
func sameCommand(prev *registryv1.CommandResult, digest []byte) error {
	if len(prev.GetCommandSha256()) == 0 || bytes.Equal(prev.GetCommandSha256(), digest) {
		return nil
	}
	return fmt.Errorf("%w: command id %s was already used by its issuer for a command with other content (applied at index %d)",
		ErrAlreadyExists, prev.GetCommandId(), prev.GetIndex())
}
