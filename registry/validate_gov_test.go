package registry

import (
	"errors"
	"strings"
	"testing"

	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
)

// Structural checks of the governance mutations (no state needed).
func TestValidateGovernanceMutations(t *testing.T) {
	joiner := newTestOrg(t, municipalityRecord(arsJoiner, "Neudorf"))
	_, sig := newSigningKey(t, "neu")
	encless := joiner.clone()
	encless.Keys[0].Status = registryv1.KeyStatus_KEY_STATUS_RETIRING
	auth := func(mod func(a *registryv1.Authorisation)) *registryv1.Mutation {
		a := authorisation(arsMuni, "ssc-inntal", arsMuni)
		mod(a)
		return mPutAuth(a)
	}
	long := strings.Repeat("x", MaxReasonLen+1)
	tests := []struct {
		name string
		cmd  *registryv1.Command
		want error // nil: valid
	}{
		{"join", &registryv1.Command{Issuer: arsJoiner, Mutations: []*registryv1.Mutation{mRequestJoin(joiner.clone())}}, nil},
		{"join for another organisation", &registryv1.Command{Issuer: arsMuni, Mutations: []*registryv1.Mutation{mRequestJoin(joiner.clone())}}, ErrInvalidArgument},
		{"join with another mutation", &registryv1.Command{Issuer: arsJoiner, Mutations: []*registryv1.Mutation{mRequestJoin(joiner.clone()), mDeleteOffering("abc:def")}}, ErrInvalidArgument},
		{"join without an active signing key", &registryv1.Command{Issuer: arsJoiner, Mutations: []*registryv1.Mutation{mRequestJoin(encless)}}, ErrInvalidArgument},
		{"status change", cmdOf(mChangeStatus(arsMuni, stSuspended, "Prüfung", "")), nil},
		{"status change without a reason", cmdOf(mChangeStatus(arsMuni, stSuspended, "", "")), ErrInvalidArgument},
		{"status change with a long reason", cmdOf(mChangeStatus(arsMuni, stSuspended, long, "")), ErrTooLarge},
		{"status change to PENDING", cmdOf(mChangeStatus(arsMuni, stPending, "x", "")), ErrInvalidArgument},
		{"status change to REGISTERED", cmdOf(mChangeStatus(arsMuni, stRegistered, "x", "")), ErrInvalidArgument},
		{"status change with a bad digest", cmdOf(mChangeStatus(arsMuni, stActive, "x", "ABC")), ErrInvalidArgument},
		{"status change of a bad id", cmdOf(mChangeStatus("X", stActive, "x", "")), ErrInvalidArgument},
		{"recovery", cmdOf(mRecoverKeys(arsMuni, "verloren", sig)), nil},
		{"recovery without keys", cmdOf(mRecoverKeys(arsMuni, "verloren")), ErrInvalidArgument},
		{"recovery without a reason", cmdOf(mRecoverKeys(arsMuni, "", sig)), ErrInvalidArgument},
		{"recovery with duplicate kids", cmdOf(mRecoverKeys(arsMuni, "verloren", sig, sig)), ErrInvalidArgument},
		{"authorisation", cmdOf(auth(func(*registryv1.Authorisation) {})), nil},
		{"authorisation for services", cmdOf(auth(func(a *registryv1.Authorisation) { a.LeikaKeys = []string{leikaHund} })), nil},
		{"authorisation with a bad LeiKa key", cmdOf(auth(func(a *registryv1.Authorisation) { a.LeikaKeys = []string{"123"} })), ErrInvalidArgument},
		{"authorisation without areas", cmdOf(auth(func(a *registryv1.Authorisation) { a.Areas = nil })), ErrInvalidArgument},
		{"authorisation with a bad area", cmdOf(auth(func(a *registryv1.Authorisation) { a.Areas = []string{"0918"} })), ErrInvalidArgument},
		{"authorisation with a bad id", cmdOf(auth(func(a *registryv1.Authorisation) { a.Id = "/x" })), ErrInvalidArgument},
		{"authorisation to itself", cmdOf(auth(func(a *registryv1.Authorisation) { a.GranteeId = arsMuni })), ErrInvalidArgument},
		{"authorisation on behalf of a non-ARS", cmdOf(auth(func(a *registryv1.Authorisation) { a.OnBehalfOf = "09187" })), ErrInvalidArgument},
		{"withdrawal", cmdOf(mWithdrawAuth("a:b:c")), nil},
		{"withdrawal of a bad id", cmdOf(mWithdrawAuth("")), ErrInvalidArgument},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.cmd.Id, tc.cmd.IssuedAtUnixMs = "cmd-0000000000000001", baseTime
			if tc.cmd.Issuer == "" {
				tc.cmd.Issuer = "by-lfst"
			}
			err := ValidateCommand(tc.cmd)
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("ValidateCommand: %v, want %v", err, tc.want)
			}
		})
	}
}

func cmdOf(muts ...*registryv1.Mutation) *registryv1.Command {
	return &registryv1.Command{Mutations: muts}
}
