package cli

import (
	"context"
	"fmt"
	"io"
	"time"

	"connectrpc.com/connect"

	nodev1 "github.com/verbund/verbund/proto/gen/verbund/node/v1"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
	"github.com/verbund/verbund/registry"
)

// keysCommand is "verbund keys": the organisation's key lifecycle.
func keysCommand() Command {
	return group("keys", "rotate or revoke the organisation's keys (on this machine's node); recover another organisation's", []subcommand{
		{"rotate", "publish new keys; the previous ones stay valid for verification during a grace period", keysRotate},
		{"revoke", "revoke one key at once: nothing it signed verifies any more", keysRevoke},
		{"recover", "re-bind an organisation that lost its key to new keys (by its approver; the operator by its recovery key)", keysRecover},
	})
}

func keysRotate(ctx context.Context, env *Env, args []string) error {
	fs := newFlagSet("keys rotate [--grace DURATION] [--revoke-previous] [flags]",
		"Give the node's organisation new signing and encryption keys. The node publishes them\n"+
			"(signed with its current key), keeps the previous keys valid for verification until\n"+
			"--grace ends (receipts and events they signed still verify), and switches over.\n"+
			"--revoke-previous revokes the previous keys at once instead (after a compromise).")
	o := clientFlags(fs, false)
	var grace time.Duration
	var revoke bool
	fs.DurationVar(&grace, "grace", 7*24*time.Hour, "how long the previous keys stay valid for verification")
	fs.BoolVar(&revoke, "revoke-previous", false, "revoke the previous keys at once")
	if _, err := fs.parse(env, args, 0, 0, ""); err != nil {
		return err
	}
	ctx, cancel := o.context(ctx)
	defer cancel()
	res, err := o.node().RotateKeys(ctx, connect.NewRequest(&nodev1.RotateKeysRequest{GraceSeconds: int64(grace / time.Second), RevokePrevious: revoke}))
	if err != nil {
		return o.rpcErr(err)
	}
	return o.emit(env, res.Msg, nil, func(w io.Writer) {
		state := fmt.Sprintf("valid for verification until %s", time.Now().Add(grace).UTC().Format("2006-01-02 15:04 MST"))
		if revoke {
			state = "revoked"
		}
		fmt.Fprintf(w, "New signing key:     %s\nNew encryption key:  %s\nPrevious keys %v: %s\nPublished at index %d\n",
			res.Msg.GetSigningKid(), res.Msg.GetEncryptionKid(), res.Msg.GetPreviousKids(), state, res.Msg.GetIndex())
	})
}

func keysRevoke(ctx context.Context, env *Env, args []string) error {
	fs := newFlagSet("keys revoke KID [flags]", "Revoke one of the organisation's keys, effective at once.")
	o := clientFlags(fs, false)
	pos, err := fs.parse(env, args, 1, 1, "KID")
	if err != nil {
		return err
	}
	ctx, cancel := o.context(ctx)
	defer cancel()
	res, err := o.node().RevokeKey(ctx, connect.NewRequest(&nodev1.RevokeKeyRequest{Kid: pos[0]}))
	if err != nil {
		return o.rpcErr(err)
	}
	return o.emit(env, res.Msg, nil, func(w io.Writer) { fmt.Fprintf(w, "Revoked %s at index %d\n", pos[0], res.Msg.GetIndex()) })
}

func keysRecover(ctx context.Context, env *Env, args []string) error {
	fs := newFlagSet("keys recover ORG --new-keys DIR --reason TEXT --key FILE --as APPROVER [flags]",
		"Re-bind organisation ORG, which lost its signing key, to the new keys in the node data dir\n"+
			"--new-keys (keys/signing.jwk, keys/encryption.jwk, and keys/recovery.pub.jwk if present;\n"+
			"make them with verbund init on the organisation's machine). Signed by ORG's approver\n"+
			"(--key, --as): its state agency, or the network operator for a state agency. The\n"+
			"network operator recovers its own keys with its offline recovery key (--key\n"+
			"OFFLINE-recovery-key.jwk --as OPERATOR). Every previous key is revoked at this index;\n"+
			"what it signed before stays verifiable (verbund history).")
	o := clientFlags(fs, false)
	var s signerFlags
	s.register(fs, "approver (or the operator, with its recovery key)")
	var dir, reason string
	fs.StringVar(&dir, "new-keys", "", "data `dir` holding the organisation's new keys")
	fs.StringVar(&reason, "reason", "", "why (required; recorded in the organisation's history)")
	fs.check(func() error {
		if dir == "" {
			return fmt.Errorf("--new-keys is required")
		}
		if reason == "" {
			return fmt.Errorf("--reason is required")
		}
		return nil
	})
	pos, err := fs.parse(env, args, 1, 1, "organisation ID")
	if err != nil {
		return err
	}
	key, err := s.load()
	if err != nil {
		return err
	}
	pks, err := nodeKeys(dir)
	if err != nil {
		return err
	}
	ctx, cancel := o.context(ctx)
	defer cancel()
	r, err := s.publish(ctx, o, registry.NewCommand(s.as, &registryv1.Mutation{Op: &registryv1.Mutation_RecoverKeys{RecoverKeys: &registryv1.KeyRecovery{
		OrganisationId: pos[0], Keys: pks, Reason: reason,
	}}}), key)
	if err != nil {
		return err
	}
	return o.emit(env, r, nil, func(w io.Writer) {
		fmt.Fprintf(w, "recovered %s: %d new keys (fingerprint %s); its previous keys are revoked from index %d (signed by %s)\n",
			pos[0], len(pks), keysDigest(pks), r.GetIndex(), s.as)
	})
}
