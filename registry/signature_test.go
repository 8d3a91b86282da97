package registry

import (
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"github.com/verbund/verbund/keys"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
)

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func cmdPayload(t testing.TB, cmd *registryv1.Command) []byte {
	t.Helper()
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(cmd)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// rawJWS builds a compact JWS by hand, so tests can put anything in the
// header. sign gets the signing input.
func rawJWS(t testing.TB, header map[string]any, payload []byte, sign func(in []byte) []byte) string {
	t.Helper()
	hj, err := json.Marshal(header)
	if err != nil {
		t.Fatal(err)
	}
	in := b64(hj) + "." + b64(payload)
	return in + "." + b64(sign([]byte(in)))
}

func edSigner(k jose.JSONWebKey) func([]byte) []byte {
	return func(in []byte) []byte { return ed25519.Sign(k.Key.(ed25519.PrivateKey), in) }
}

func stdHeader(kid string) map[string]any {
	return map[string]any{"alg": "EdDSA", "kid": kid, "typ": CommandType}
}

func (w *world) fork() *world {
	return &world{harness: w.harness.fork(), muni: w.muni, muni2: w.muni2, ssc: w.ssc, state: w.state}
}

func TestSignatures(t *testing.T) {
	type env struct {
		*world
		cmd *registryv1.Command // a valid command of w.muni
		// extra keys of w.muni, published by the setup
		revoked, retiring, enc jose.JSONWebKey
		notAfter               int64
	}
	tests := []struct {
		name       string
		raw        func(e *env) string
		proposedAt func(e *env) int64 // default: e.now
		wantCode   string
	}{
		{name: "valid (SignCommand)", raw: func(e *env) string { return signCmd(t, e.cmd, e.muni.key) }},
		{
			name: "valid (hand-made JWS)",
			raw: func(e *env) string {
				return rawJWS(t, stdHeader(e.muni.key.KeyID), cmdPayload(t, e.cmd), edSigner(e.muni.key))
			},
		},
		{name: "empty", raw: func(e *env) string { return "" }, wantCode: CodeInvalidSignature},
		{name: "garbage", raw: func(e *env) string { return "das ist kein JWS" }, wantCode: CodeInvalidSignature},
		{name: "three garbage parts", raw: func(e *env) string { return "a.b.c" }, wantCode: CodeInvalidSignature},
		{
			name: "unsigned (no signature part)",
			raw: func(e *env) string {
				raw := signCmd(t, e.cmd, e.muni.key)
				return raw[:strings.LastIndexByte(raw, '.')]
			},
			wantCode: CodeInvalidSignature,
		},
		{
			name: "empty signature",
			raw: func(e *env) string {
				raw := signCmd(t, e.cmd, e.muni.key)
				return raw[:strings.LastIndexByte(raw, '.')+1]
			},
			wantCode: CodeInvalidSignature,
		},
		{
			name: "garbled signature",
			raw: func(e *env) string {
				raw := []byte(signCmd(t, e.cmd, e.muni.key))
				i := len(raw) - 10
				raw[i] = map[bool]byte{true: 'B', false: 'A'}[raw[i] == 'A']
				return string(raw)
			},
			wantCode: CodeInvalidSignature,
		},
		{
			name: "payload swapped under a valid signature",
			raw: func(e *env) string {
				raw := signCmd(t, e.cmd, e.muni.key)
				parts := strings.Split(raw, ".")
				c := proto.Clone(e.cmd).(*registryv1.Command)
				c.Mutations[0].GetPutOffering().Areas = []string{"09"}
				parts[1] = b64(cmdPayload(t, c))
				return strings.Join(parts, ".")
			},
			wantCode: CodeInvalidSignature,
		},
		{
			name: "JSON serialisation",
			raw: func(e *env) string {
				raw := signCmd(t, e.cmd, e.muni.key)
				jws, err := jose.ParseSigned(raw, []jose.SignatureAlgorithm{jose.EdDSA})
				if err != nil {
					t.Fatal(err)
				}
				return jws.FullSerialize()
			},
			wantCode: CodeInvalidSignature,
		},
		{
			name: "signed with the wrong key",
			raw: func(e *env) string {
				k, _ := newSigningKey(t, "fremd")
				k.KeyID = e.muni.key.KeyID
				return signCmd(t, e.cmd, k)
			},
			wantCode: CodeInvalidSignature,
		},
		{
			name:     "signed with another organisation's key and kid",
			raw:      func(e *env) string { return signCmd(t, e.cmd, e.muni2.key) },
			wantCode: CodeUnknownKey,
		},
		{
			name:     "signed with the operator's key",
			raw:      func(e *env) string { return signCmd(t, e.cmd, e.op.key) },
			wantCode: CodeUnknownKey,
		},
		{
			name: "unknown kid",
			raw: func(e *env) string {
				k, _ := newSigningKey(t, "unbekannt")
				return signCmd(t, e.cmd, k)
			},
			wantCode: CodeUnknownKey,
		},
		{name: "revoked kid", raw: func(e *env) string { return signCmd(t, e.cmd, e.revoked) }, wantCode: CodeUnknownKey},
		{
			name:       "retiring key before not_after",
			raw:        func(e *env) string { return signCmd(t, e.cmd, e.retiring) },
			proposedAt: func(e *env) int64 { return e.notAfter - 1 },
		},
		{
			name:       "retiring key at not_after",
			raw:        func(e *env) string { return signCmd(t, e.cmd, e.retiring) },
			proposedAt: func(e *env) int64 { return e.notAfter },
		},
		{
			name:       "retiring key after not_after",
			raw:        func(e *env) string { return signCmd(t, e.cmd, e.retiring) },
			proposedAt: func(e *env) int64 { return e.notAfter + 1 },
			wantCode:   CodeUnknownKey,
		},
		{
			name: "encryption key's kid",
			raw: func(e *env) string {
				k, _ := newSigningKey(t, "x")
				k.KeyID = e.enc.KeyID
				return signCmd(t, e.cmd, k)
			},
			wantCode: CodeUnknownKey,
		},
		{
			name: "alg none",
			raw: func(e *env) string {
				h := stdHeader(e.muni.key.KeyID)
				h["alg"] = "none"
				return rawJWS(t, h, cmdPayload(t, e.cmd), func([]byte) []byte { return nil })
			},
			wantCode: CodeInvalidSignature,
		},
		{
			name: "HS256 keyed with the public key",
			raw: func(e *env) string {
				h := stdHeader(e.muni.key.KeyID)
				h["alg"] = "HS256"
				secret := []byte(e.muni.rec.GetKeys()[0].GetJwkJson())
				return rawJWS(t, h, cmdPayload(t, e.cmd), func(in []byte) []byte {
					m := hmac.New(sha256.New, secret)
					m.Write(in)
					return m.Sum(nil)
				})
			},
			wantCode: CodeInvalidSignature,
		},
		{
			name: "embedded jwk of the attacker",
			raw: func(e *env) string {
				k, _ := newSigningKey(t, "angreifer")
				pub, err := json.Marshal(k.Public())
				if err != nil {
					t.Fatal(err)
				}
				h := stdHeader(e.muni.key.KeyID)
				h["jwk"] = json.RawMessage(pub)
				return rawJWS(t, h, cmdPayload(t, e.cmd), edSigner(k))
			},
			wantCode: CodeInvalidSignature,
		},
		{
			name: "embedded jwk of the issuer",
			raw: func(e *env) string {
				h := stdHeader(e.muni.key.KeyID)
				h["jwk"] = json.RawMessage(e.muni.rec.GetKeys()[0].GetJwkJson())
				return rawJWS(t, h, cmdPayload(t, e.cmd), edSigner(e.muni.key))
			},
			wantCode: CodeInvalidSignature,
		},
		{
			name: "jku header",
			raw: func(e *env) string {
				h := stdHeader(e.muni.key.KeyID)
				h["jku"] = "https://angreifer.example/jwks.json"
				return rawJWS(t, h, cmdPayload(t, e.cmd), edSigner(e.muni.key))
			},
			wantCode: CodeInvalidSignature,
		},
		{
			name: "escaped jwk header name",
			raw: func(e *env) string {
				hdr := `{"alg":"EdDSA","kid":"` + e.muni.key.KeyID + `","typ":"` + CommandType + `","\u006awk":{}}`
				in := b64([]byte(hdr)) + "." + b64(cmdPayload(t, e.cmd))
				return in + "." + b64(edSigner(e.muni.key)([]byte(in)))
			},
			wantCode: CodeInvalidSignature,
		},
		{
			name: "crit header",
			raw: func(e *env) string {
				h := stdHeader(e.muni.key.KeyID)
				h["crit"] = []string{"exp"}
				h["exp"] = 1
				return rawJWS(t, h, cmdPayload(t, e.cmd), edSigner(e.muni.key))
			},
			wantCode: CodeInvalidSignature,
		},
		{
			name: "wrong typ",
			raw: func(e *env) string {
				h := stdHeader(e.muni.key.KeyID)
				h["typ"] = "JWT"
				return rawJWS(t, h, cmdPayload(t, e.cmd), edSigner(e.muni.key))
			},
			wantCode: CodeInvalidSignature,
		},
		{
			name: "no typ",
			raw: func(e *env) string {
				h := stdHeader(e.muni.key.KeyID)
				delete(h, "typ")
				return rawJWS(t, h, cmdPayload(t, e.cmd), edSigner(e.muni.key))
			},
			wantCode: CodeInvalidSignature,
		},
		{
			name: "no kid",
			raw: func(e *env) string {
				h := stdHeader(e.muni.key.KeyID)
				delete(h, "kid")
				return rawJWS(t, h, cmdPayload(t, e.cmd), edSigner(e.muni.key))
			},
			wantCode: CodeInvalidSignature,
		},
		{
			name: "payload is not a command",
			raw: func(e *env) string {
				return rawJWS(t, stdHeader(e.muni.key.KeyID), []byte{0xff, 0xff, 0xff}, edSigner(e.muni.key))
			},
			wantCode: CodeInvalidArgument,
		},
		{
			name: "signed command that fails validation",
			raw: func(e *env) string {
				c := proto.Clone(e.cmd).(*registryv1.Command)
				c.Id = "kurz"
				return rawJWS(t, stdHeader(e.muni.key.KeyID), cmdPayload(t, c), edSigner(e.muni.key))
			},
			wantCode: CodeInvalidArgument,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			e := &env{world: w}
			// w.muni rotates: its original key stays active, and it publishes
			// a revoked, a retiring and an encryption key.
			var pkRevoked, pkRetiring *registryv1.PublicKey
			e.revoked, pkRevoked = newSigningKey(t, "revoked")
			pkRevoked.Status = registryv1.KeyStatus_KEY_STATUS_REVOKED
			e.retiring, pkRetiring = newSigningKey(t, "retiring")
			e.notAfter = w.now + time.Hour.Milliseconds()
			pkRetiring.Status, pkRetiring.NotAfterUnixMs = registryv1.KeyStatus_KEY_STATUS_RETIRING, e.notAfter
			enc, err := keys.GenerateEncryption(keys.NewKID("enc"))
			if err != nil {
				t.Fatal(err)
			}
			e.enc = enc
			pkEnc, err := keys.Published(enc)
			if err != nil {
				t.Fatal(err)
			}
			rec := w.muni.clone()
			rec.Keys = append(rec.Keys, pkRevoked, pkRetiring, pkEnc)
			w.mustApply(w.signed(w.muni, mPutOrg(rec)))
			w.muni.rec = rec

			e.cmd = w.cmd(w.muni, mPutOffering(offering(arsMuni, leikaGewerbe, arsMuni)))
			proposedAt := w.now
			if tc.proposedAt != nil {
				proposedAt = tc.proposedAt(e)
				e.cmd.IssuedAtUnixMs = proposedAt - 1000
			}
			before := dumpState(t, w.db)
			res := w.applyLog(w.nextLogAt(proposedAt, tc.raw(e)))
			requireCode(t, res[0], tc.wantCode)
			if tc.wantCode == "" {
				getOffering(t, w.r, arsMuni+":"+leikaGewerbe)
				return
			}
			// A command that does not verify leaves no trace at all: not
			// even a dedupe record, so it cannot burn the command id.
			requireSameState(t, before, dumpState(t, w.db), ignoreApplied...)
			if e.cmd.GetIssuedAtUnixMs() > w.now-60_000 && tc.proposedAt == nil {
				requireCode(t, w.apply1(signCmd(t, e.cmd, w.muni.key)), "")
			}
		})
	}
}

// TestParseCommandErrors checks the sentinel errors of ParseCommand.
func TestParseCommandErrors(t *testing.T) {
	k, _ := newSigningKey(t, "k")
	valid := signCmd(t, NewCommand(arsMuni, mDeleteOffering("abc:def")), k)
	tests := []struct {
		name string
		raw  string
		want error
	}{
		{name: "valid", raw: valid},
		{name: "too large", raw: strings.Repeat("a", MaxSignedCommandBytes+1), want: ErrTooLarge},
		{name: "four parts", raw: valid + ".x", want: ErrInvalidSignature},
		{name: "header too large", raw: strings.Repeat("a", 2000) + ".b.c", want: ErrInvalidSignature},
		{name: "header not base64", raw: "!!!.b.c", want: ErrInvalidSignature},
		{name: "header not an object", raw: b64([]byte(`[1]`)) + ".b.c", want: ErrInvalidSignature},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sc, err := ParseCommand(tc.raw)
			if tc.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				if sc.KID != k.KeyID || sc.Digest != sha256.Sum256([]byte(tc.raw)) {
					t.Fatalf("kid %q digest %x", sc.KID, sc.Digest)
				}
				pub := k.Public()
				if err := sc.Verify(pub); err != nil {
					t.Fatalf("verify: %v", err)
				}
				other, _ := newSigningKey(t, "other")
				if err := sc.Verify(other.Public()); !errors.Is(err, ErrInvalidSignature) {
					t.Fatalf("verify with another key: %v", err)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("error %v, want %v", err, tc.want)
			}
		})
	}
}

// TestPublishForeignKid: an organisation cannot publish a kid that belongs
// to another organisation.
func TestPublishForeignKid(t *testing.T) {
	tests := []struct {
		name string
		cmd  func(w *world) string
	}{
		{
			name: "self-update with another organisation's kid and key",
			cmd: func(w *world) string {
				rec := w.muni.clone()
				rec.Keys = append(rec.Keys, w.muni2.rec.GetKeys()[0])
				return w.signed(w.muni, mPutOrg(rec))
			},
		},
		{
			name: "self-update with another organisation's kid and own material",
			cmd: func(w *world) string {
				rec := w.muni.clone()
				k, _ := newSigningKey(t, "x")
				k.KeyID = w.muni2.key.KeyID
				pk, err := keys.Published(k)
				if err != nil {
					t.Fatal(err)
				}
				rec.Keys = append(rec.Keys, pk)
				return w.signed(w.muni, mPutOrg(rec))
			},
		},
		{
			name: "operator onboards an organisation with the operator's kid",
			cmd: func(w *world) string {
				return w.signed(w.op, mPutOrg(&registryv1.Organisation{
					Id: "ssc-neu", Kind: registryv1.OrganisationKind_ORGANISATION_KIND_SHARED_SERVICE_CENTRE, Name: "Neu",
					Keys: w.op.rec.GetKeys(),
				}))
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			before := dumpState(t, w.db)
			requireCode(t, w.apply1(tc.cmd(w)), CodePermissionDenied)
			requireSameState(t, before, dumpState(t, w.db), ignoreBooks...)
			// The kid still belongs to its owner, who can still sign.
			w.mustApply(w.signed(w.muni2, mPutOffering(offering(arsMuni2, leikaGewerbe, arsMuni2))))
		})
	}
}

// TestKeyRotationInBatch: key changes earlier in an ApplyBatch take effect
// for the later commands of the same batch, exactly as when the logs are
// applied one at a time.
func TestKeyRotationInBatch(t *testing.T) {
	type rot struct {
		old, next jose.JSONWebKey
		rec       *registryv1.Organisation // the rotated record
	}
	// rotate builds muni's record with a new active key and the old key in
	// the given status (0 = removed).
	rotate := func(w *world, oldStatus registryv1.KeyStatus) rot {
		next, pk := newSigningKey(t, "next")
		rec := w.muni.clone()
		if oldStatus == 0 {
			rec.Keys = nil
		} else {
			rec.Keys[0].Status = oldStatus
		}
		rec.Keys = append(rec.Keys, pk)
		return rot{old: w.muni.key, next: next, rec: rec}
	}
	tests := []struct {
		name      string
		sameEntry bool
		// cmds returns command 1 and command 2.
		cmds     func(w *world) (string, string)
		wantCode string // of command 2
	}{
		{
			name: "signed with the new key",
			cmds: func(w *world) (string, string) {
				r := rotate(w, registryv1.KeyStatus_KEY_STATUS_REVOKED)
				c1 := w.signed(w.muni, mPutOrg(r.rec))
				return c1, signCmd(t, w.cmd(w.muni, mPutOffering(offering(arsMuni, leikaGewerbe, arsMuni))), r.next)
			},
		},
		{
			name:      "signed with the new key, same entry",
			sameEntry: true,
			cmds: func(w *world) (string, string) {
				r := rotate(w, registryv1.KeyStatus_KEY_STATUS_REVOKED)
				c1 := w.signed(w.muni, mPutOrg(r.rec))
				return c1, signCmd(t, w.cmd(w.muni, mPutOffering(offering(arsMuni, leikaGewerbe, arsMuni))), r.next)
			},
		},
		{
			name: "signed with the revoked old key",
			cmds: func(w *world) (string, string) {
				r := rotate(w, registryv1.KeyStatus_KEY_STATUS_REVOKED)
				c1 := w.signed(w.muni, mPutOrg(r.rec))
				return c1, signCmd(t, w.cmd(w.muni, mPutOffering(offering(arsMuni, leikaGewerbe, arsMuni))), r.old)
			},
			wantCode: CodeUnknownKey,
		},
		{
			name:      "signed with the revoked old key, same entry",
			sameEntry: true,
			cmds: func(w *world) (string, string) {
				r := rotate(w, registryv1.KeyStatus_KEY_STATUS_REVOKED)
				c1 := w.signed(w.muni, mPutOrg(r.rec))
				return c1, signCmd(t, w.cmd(w.muni, mPutOffering(offering(arsMuni, leikaGewerbe, arsMuni))), r.old)
			},
			wantCode: CodeUnknownKey,
		},
		{
			name: "signed with the removed old key",
			cmds: func(w *world) (string, string) {
				r := rotate(w, 0)
				c1 := w.signed(w.muni, mPutOrg(r.rec))
				return c1, signCmd(t, w.cmd(w.muni, mPutOffering(offering(arsMuni, leikaGewerbe, arsMuni))), r.old)
			},
			wantCode: CodeUnknownKey,
		},
		{
			name: "signed with the retiring old key",
			cmds: func(w *world) (string, string) {
				r := rotate(w, registryv1.KeyStatus_KEY_STATUS_RETIRING)
				r.rec.Keys[0].NotAfterUnixMs = w.now + 60_000
				c1 := w.signed(w.muni, mPutOrg(r.rec))
				return c1, signCmd(t, w.cmd(w.muni, mPutOffering(offering(arsMuni, leikaGewerbe, arsMuni))), r.old)
			},
		},
		{
			name: "same kid, new key material",
			cmds: func(w *world) (string, string) {
				next, _ := newSigningKey(t, "x")
				next.KeyID = w.muni.key.KeyID
				pk, err := keys.Published(next)
				if err != nil {
					t.Fatal(err)
				}
				rec := w.muni.clone()
				rec.Keys = []*registryv1.PublicKey{pk}
				c1 := w.signed(w.muni, mPutOrg(rec))
				return c1, signCmd(t, w.cmd(w.muni, mPutOffering(offering(arsMuni, leikaGewerbe, arsMuni))), next)
			},
		},
		{
			name: "same kid, old key material",
			cmds: func(w *world) (string, string) {
				next, _ := newSigningKey(t, "x")
				next.KeyID = w.muni.key.KeyID
				pk, err := keys.Published(next)
				if err != nil {
					t.Fatal(err)
				}
				rec := w.muni.clone()
				rec.Keys = []*registryv1.PublicKey{pk}
				c1 := w.signed(w.muni, mPutOrg(rec))
				return c1, w.signed(w.muni, mPutOffering(offering(arsMuni, leikaGewerbe, arsMuni)))
			},
			wantCode: CodeInvalidSignature,
		},
		{
			name: "issuer suspended by the operator",
			cmds: func(w *world) (string, string) {
				return w.signed(w.state, mChangeStatus(arsMuni, registryv1.OrganisationStatus_ORGANISATION_STATUS_SUSPENDED, "Prüfung", "")),
					w.signed(w.muni, mPutOffering(offering(arsMuni, leikaGewerbe, arsMuni)))
			},
			wantCode: CodePermissionDenied,
		},
		{
			name: "issuer onboarded earlier in the batch",
			cmds: func(w *world) (string, string) {
				const ars = "091870126333"
				n := newTestOrg(t, &registryv1.Organisation{Id: ars, Kind: registryv1.OrganisationKind_ORGANISATION_KIND_MUNICIPALITY, Name: "Neu", Ars: ars})
				return w.signed(w.state, mPutOrg(n.rec)), w.signed(n, mPutOffering(offering(ars, leikaGewerbe, ars)))
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			batch := newWorld(t)
			single := batch.fork()
			c1, c2 := tc.cmds(batch)
			var logs []*raft.Log
			if tc.sameEntry {
				logs = []*raft.Log{batch.nextLog(c1, c2)}
			} else {
				logs = []*raft.Log{batch.nextLog(c1), batch.nextLog(c2)}
			}
			before := dumpState(t, batch.db)

			// The same logs, one ApplyBatch here and one Apply per log there.
			out := batch.fsm.ApplyBatch(logs)
			var got, want []*registryv1.CommandResult
			for i, l := range logs {
				got = append(got, out[i].(*LogResult).Results...)
				want = append(want, single.fsm.Apply(l).(*LogResult).Results...)
			}
			requireCode(t, got[0], "")
			requireCode(t, got[1], tc.wantCode)
			for i := range got {
				if !proto.Equal(got[i], want[i]) {
					t.Errorf("command %d: batch result %v, single-log result %v", i+1, got[i], want[i])
				}
			}
			requireSameState(t, dumpState(t, single.db), dumpState(t, batch.db))
			if tc.wantCode != "" {
				// Only command 1 took effect.
				if _, _, err := batch.r.Offering(arsMuni + ":" + leikaGewerbe); err == nil {
					t.Fatal("offering of the refused command stored")
				}
			} else if d := diffState(without(before, ignoreBooks...), without(dumpState(t, batch.db), ignoreBooks...)); !strings.Contains(d, pOffering) {
				t.Fatalf("offering not stored:\n%s", d)
			}
		})
	}
}

func TestPreVerify(t *testing.T) {
	w := newWorld(t)
	other, _ := newSigningKey(t, "other")
	other.KeyID = w.muni.key.KeyID
	stranger := newTestOrg(t, &registryv1.Organisation{Id: "ssc-fremd", Kind: registryv1.OrganisationKind_ORGANISATION_KIND_SHARED_SERVICE_CENTRE, Name: "Fremd"})
	tests := []struct {
		name string
		raw  string
		want error
	}{
		{name: "valid", raw: w.signed(w.muni, mDeleteOffering("abc:def"))},
		{name: "wrong key", raw: signCmd(t, w.cmd(w.muni, mDeleteOffering("abc:def")), other), want: ErrInvalidSignature},
		{name: "another organisation's key", raw: signCmd(t, w.cmd(w.muni, mDeleteOffering("abc:def")), w.muni2.key), want: ErrUnknownKey},
		{name: "unregistered issuer", raw: w.signed(stranger, mPutOrg(stranger.rec)), want: ErrUnknownKey},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sc, err := ParseCommand(tc.raw)
			if err != nil {
				t.Fatal(err)
			}
			err = w.fsm.PreVerify(sc)
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("PreVerify: %v, want %v", err, tc.want)
			}
		})
	}
}

// TestForgedDuplicate: a forged command reusing the id of an applied one is
// refused for its signature; it does not get the original result.
func TestForgedDuplicate(t *testing.T) {
	tests := []struct {
		name string
		// keyChange puts a change of the issuer's record before the forgery
		// in the same batch, so the forgery is verified during apply.
		keyChange bool
	}{
		{name: "later entry"},
		{name: "after a change of the issuer in the same batch", keyChange: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			cmd := w.cmd(w.muni, mPutOffering(offering(arsMuni, leikaGewerbe, arsMuni)))
			requireCode(t, w.apply1(signCmd(t, cmd, w.muni.key)), "")
			forger, _ := newSigningKey(t, "forger")
			forger.KeyID = w.muni.key.KeyID
			forged := signCmd(t, cmd, forger)
			var raws []string
			if tc.keyChange {
				rec := w.muni.clone()
				rec.ApiEndpoint = "https://musterdorf.example"
				raws = append(raws, w.signed(w.muni, mPutOrg(rec)))
			}
			res := w.apply(append(raws, forged)...)
			last := res[len(res)-1]
			requireCode(t, last, CodeInvalidSignature)
			if last.GetDuplicate() {
				t.Fatal("forgery got the original result")
			}
		})
	}
}
