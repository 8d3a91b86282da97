package cli

import (
	"context"
	"fmt"
	"io"
	"time"

	"connectrpc.com/connect"

	nodev1 "github.com/verbund/verbund/proto/gen/verbund/node/v1"
)

// keysCommand is "verbund keys": the organisation's key lifecycle.
func keysCommand() Command {
	return group("keys", "rotate or revoke the organisation's signing and encryption keys (on this machine's node)", []subcommand{
		{"rotate", "publish new keys; the previous ones stay valid for verification during a grace period", keysRotate},
		{"revoke", "revoke one key at once: nothing it signed verifies any more", keysRevoke},
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
