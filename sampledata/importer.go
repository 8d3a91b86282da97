package sampledata

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"connectrpc.com/connect"
	jose "github.com/go-jose/go-jose/v4"
	"google.golang.org/protobuf/proto"

	"github.com/verbund/verbund/keys"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
	"github.com/verbund/verbund/registry"
)

// Publisher is what the importer needs from a node (owned here; the node's
// Connect client satisfies it via a tiny adapter).
type Publisher interface {
	Publish(ctx context.Context, signedCommands []string) (*registryv1.PublishResponse, error)
}

// Progress reports the state of the current phase. Done, Total and
// Duplicates count records (mutations): Duplicates are those in commands
// the registry had already applied.
type Progress struct {
	Phase      string
	Done       int
	Total      int
	Duplicates int
	Elapsed    time.Duration
}

// Options configure Import.
type Options struct {
	// OperatorID is the network operator's organisation id; it signs all
	// organisations and catalogue entries.
	OperatorID  string
	OperatorKey jose.JSONWebKey
	// MunichKey is Munich's private signing key. Its public half is
	// published in Munich's record; Munich signs its own offerings.
	MunichKey jose.JSONWebKey
	// BatchSize is the number of mutations per command (default 500, at
	// most registry.MaxMutations). Commands are also cut at 256 KiB. Batch
	// boundaries enter the command ids: resume with the same BatchSize.
	BatchSize int
	// Parallel is the number of commands in flight within a phase
	// (default 4). Phases run one after the other.
	Parallel int
	// OnProgress, if set, is called at the start of every phase and after
	// every command; calls are serialised.
	OnProgress func(Progress)
	// RetryBackoff is the delay before retrying a transient Publish failure
	// (default 250ms); it doubles per try, up to 5 tries per command.
	RetryBackoff time.Duration
}

// Import phases, in order.
const (
	PhaseStates         = "states"
	PhaseDistricts      = "districts"
	PhaseAssociations   = "associations"
	PhaseMunicipalities = "municipalities"
	PhaseMunich         = "munich"
	PhaseServices       = "services"
	PhaseOfferings      = "offerings"
)

// PhaseSummary counts one phase. Records = Applied + Duplicates.
type PhaseSummary struct {
	Phase      string
	Commands   int
	Records    int
	Applied    int
	Duplicates int
}

// Summary is the outcome of Import. On error it covers what was done.
type Summary struct {
	Phases     []PhaseSummary
	Commands   int
	Records    int
	Applied    int
	Duplicates int
	// LastIndex is the highest Raft index reported; pass it as
	// ReadOptions.min_index to read the imported data on any node.
	LastIndex uint64
	Elapsed   time.Duration
}

// BatchError is a command the registry refused, or could not be reached
// for. errors.Is(err, registry.ErrPermissionDenied) etc. work for refusals.
type BatchError struct {
	Phase     string
	Batch     int
	CommandID string
	// Code is the registry's error_code; empty if Publish itself failed.
	Code string
	Err  error
}

func (e *BatchError) Error() string {
	if e.Code != "" {
		return fmt.Sprintf("sampledata: %s batch %d (command %s): %s: %v", e.Phase, e.Batch, e.CommandID, e.Code, e.Err)
	}
	return fmt.Sprintf("sampledata: %s batch %d (command %s): %v", e.Phase, e.Batch, e.CommandID, e.Err)
}

func (e *BatchError) Unwrap() error { return e.Err }

const (
	defaultBatchSize = 500
	defaultParallel  = 4
	defaultBackoff   = 250 * time.Millisecond
	maxBackoff       = 5 * time.Second
	maxTries         = 5
	maxBatchBytes    = 256 << 10
	// commandIDScheme is hashed into every command id; change it only to
	// force a complete re-import.
	commandIDScheme = "verbund-sampledata/v1"
)

type batch struct {
	num   int
	id    string
	muts  []*registryv1.Mutation
	bytes int
}

type phase struct {
	name    string
	issuer  string
	key     jose.JSONWebKey
	batches []*batch
	records int
}

// commandID is the deterministic id of a batch: base64url of the first 24
// bytes of SHA-256 over the scheme, phase, issuer, batch
// number and the deterministic encoding of the mutations (32 characters).
// The same data always yields the same ids, so the registry answers
// "duplicate" for batches it has applied before.
func commandID(h []byte) string { return base64.RawURLEncoding.EncodeToString(h[:24]) }

func makeBatches(name, issuer string, muts []*registryv1.Mutation, size int) (*phase, error) {
	ph := &phase{name: name, issuer: issuer, records: len(muts)}
	var cur *batch
	sum := sha256.New()
	finish := func() {
		if cur != nil {
			cur.id = commandID(sum.Sum(nil))
			ph.batches = append(ph.batches, cur)
		}
	}
	mo := proto.MarshalOptions{Deterministic: true}
	var lenBuf [binary.MaxVarintLen64]byte
	for _, m := range muts {
		b, err := mo.Marshal(m)
		if err != nil {
			return nil, fmt.Errorf("%s: encode mutation: %w", name, err)
		}
		if cur == nil || len(cur.muts) >= size || cur.bytes+len(b) > maxBatchBytes {
			finish()
			cur = &batch{num: len(ph.batches)}
			sum.Reset()
			for _, s := range []string{commandIDScheme, name, issuer, strconv.Itoa(cur.num)} {
				sum.Write([]byte(s))
				sum.Write([]byte{0})
			}
		}
		cur.muts = append(cur.muts, m)
		cur.bytes += len(b)
		sum.Write(lenBuf[:binary.PutUvarint(lenBuf[:], uint64(len(b)))])
		sum.Write(b)
	}
	finish()
	return ph, nil
}

func putOrgs(os []*registryv1.Organisation) []*registryv1.Mutation {
	out := make([]*registryv1.Mutation, len(os))
	for i, o := range os {
		out[i] = &registryv1.Mutation{Op: &registryv1.Mutation_PutOrganisation{PutOrganisation: o}}
	}
	return out
}

func checkSigningKey(what string, k jose.JSONWebKey) error {
	if k.KeyID == "" || k.Key == nil || !k.Valid() || k.IsPublic() {
		return fmt.Errorf("sampledata: %s must be a private signing key with a kid", what)
	}
	return nil
}

// plan converts all data and cuts it into the commands of every phase.
func plan(opt Options) ([]*phase, error) {
	if !registry.ValidOrgID(opt.OperatorID) {
		return nil, fmt.Errorf("sampledata: operator id %q is not an organisation id", opt.OperatorID)
	}
	if err := checkSigningKey("operator key", opt.OperatorKey); err != nil {
		return nil, err
	}
	if err := checkSigningKey("Munich key", opt.MunichKey); err != nil {
		return nil, err
	}
	states, err := States()
	if err != nil {
		return nil, err
	}
	districts, err := Districts()
	if err != nil {
		return nil, err
	}
	assocs, err := Associations()
	if err != nil {
		return nil, err
	}
	munis, err := Municipalities()
	if err != nil {
		return nil, err
	}
	services, offerings, err := MunichServices()
	if err != nil {
		return nil, err
	}
	// Munich is left out of the municipality phase and written once, with
	// its key and ACTIVE: were it in both, a later change of the
	// municipality data would create a new municipality command that resets
	// Munich to REGISTERED without keys, while the unchanged Munich command
	// would only be answered "duplicate".
	var munich *registryv1.Organisation
	others := munis[:0:0]
	for _, m := range munis {
		if m.GetId() == MunichARS {
			munich = m
		} else {
			others = append(others, m)
		}
	}
	if munich == nil {
		return nil, errors.New("sampledata: Munich is missing from the municipalities")
	}
	pub, err := keys.Published(opt.MunichKey)
	if err != nil {
		return nil, fmt.Errorf("sampledata: Munich key: %w", err)
	}
	munich.Keys = []*registryv1.PublicKey{pub}
	munich.Status = registryv1.OrganisationStatus_ORGANISATION_STATUS_ACTIVE

	svcMuts := make([]*registryv1.Mutation, len(services))
	for i, s := range services {
		svcMuts[i] = &registryv1.Mutation{Op: &registryv1.Mutation_PutService{PutService: s}}
	}
	offMuts := make([]*registryv1.Mutation, len(offerings))
	for i, o := range offerings {
		offMuts[i] = &registryv1.Mutation{Op: &registryv1.Mutation_PutOffering{PutOffering: o}}
	}

	size := opt.BatchSize
	if size <= 0 {
		size = defaultBatchSize
	}
	size = min(size, registry.MaxMutations)
	specs := []struct {
		name, issuer string
		key          jose.JSONWebKey
		muts         []*registryv1.Mutation
	}{
		{PhaseStates, opt.OperatorID, opt.OperatorKey, putOrgs(states)},
		{PhaseDistricts, opt.OperatorID, opt.OperatorKey, putOrgs(districts)},
		{PhaseAssociations, opt.OperatorID, opt.OperatorKey, putOrgs(assocs)},
		{PhaseMunicipalities, opt.OperatorID, opt.OperatorKey, putOrgs(others)},
		{PhaseMunich, opt.OperatorID, opt.OperatorKey, putOrgs([]*registryv1.Organisation{munich})},
		{PhaseServices, opt.OperatorID, opt.OperatorKey, svcMuts},
		{PhaseOfferings, MunichARS, opt.MunichKey, offMuts},
	}
	phases := make([]*phase, 0, len(specs))
	for _, s := range specs {
		ph, err := makeBatches(s.name, s.issuer, s.muts, size)
		if err != nil {
			return nil, err
		}
		ph.key = s.key
		phases = append(phases, ph)
	}
	return phases, nil
}

// Import loads all sample data into the registry behind p through the
// ordinary signed write path: states, districts, associations and
// municipalities (signed by the operator), Munich's record with its public
// key and status ACTIVE (operator), the catalogue entries (operator), and
// Munich's offerings (signed by Munich, issuer 091620000000).
//
// Command ids are derived from the content, so Import is idempotent and
// resumable: after a crash, a re-run resubmits the same commands and the
// registry answers "duplicate" for those already applied (the registry
// remembers command ids for its replay window, 24 hours by default; after
// that a re-run is applied again, which leaves identical records as they
// are). A command result with an
// error code stops the import with a *BatchError. Publish failures with
// Connect codes Unavailable, DeadlineExceeded or Aborted (or the registry
// errors ErrUnavailable, ErrIndeterminate, ErrNotLeader) are retried with
// backoff, up to 5 tries.
func Import(ctx context.Context, p Publisher, opt Options) (Summary, error) {
	start := time.Now()
	var sum Summary
	phases, err := plan(opt)
	if err != nil {
		return sum, err
	}
	im := &importer{p: p, opt: opt, start: start}
	if im.opt.Parallel <= 0 {
		im.opt.Parallel = defaultParallel
	}
	if im.opt.RetryBackoff <= 0 {
		im.opt.RetryBackoff = defaultBackoff
	}
	for _, ph := range phases {
		ps, last, err := im.runPhase(ctx, ph)
		sum.Phases = append(sum.Phases, ps)
		sum.Commands += ps.Commands
		sum.Records += ps.Records
		sum.Applied += ps.Applied
		sum.Duplicates += ps.Duplicates
		sum.LastIndex = max(sum.LastIndex, last)
		sum.Elapsed = time.Since(start)
		if err != nil {
			return sum, err
		}
	}
	return sum, nil
}

type importer struct {
	p     Publisher
	opt   Options
	start time.Time
}

func (im *importer) runPhase(ctx context.Context, ph *phase) (PhaseSummary, uint64, error) {
	ps := PhaseSummary{Phase: ph.name}
	var (
		mu       sync.Mutex
		wg       sync.WaitGroup
		firstErr error
		last     uint64
		done     int
	)
	report := func() {
		if im.opt.OnProgress != nil {
			im.opt.OnProgress(Progress{Phase: ph.name, Done: done, Total: ph.records, Duplicates: ps.Duplicates, Elapsed: time.Since(im.start)})
		}
	}
	mu.Lock()
	report()
	mu.Unlock()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sem := make(chan struct{}, im.opt.Parallel)
loop:
	for _, b := range ph.batches {
		if ctx.Err() != nil {
			break
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			break loop
		}
		mu.Lock()
		stop := firstErr != nil
		mu.Unlock()
		if stop {
			<-sem
			break
		}
		wg.Add(1)
		go func(b *batch) {
			defer wg.Done()
			defer func() { <-sem }()
			dup, index, err := im.publish(ctx, ph, b)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if firstErr == nil {
					firstErr = err
					cancel()
				}
				return
			}
			last = max(last, index)
			ps.Commands++
			ps.Records += len(b.muts)
			done += len(b.muts)
			if dup {
				ps.Duplicates += len(b.muts)
			} else {
				ps.Applied += len(b.muts)
			}
			report()
		}(b)
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if firstErr == nil && ctx.Err() != nil && done < ph.records {
		firstErr = fmt.Errorf("sampledata: %s: %w", ph.name, context.Cause(ctx))
	}
	return ps, last, firstErr
}

// retryable reports whether a failed Publish may succeed when retried.
// Commands are idempotent, so retrying one that was in fact committed is
// safe: the registry answers "duplicate".
func retryable(err error) bool {
	switch connect.CodeOf(err) {
	case connect.CodeUnavailable, connect.CodeDeadlineExceeded, connect.CodeAborted,
		connect.CodeUnknown: // outcome unknown: the command id makes a retry safe
		return true
	}
	return errors.Is(err, registry.ErrUnavailable) || errors.Is(err, registry.ErrIndeterminate) || errors.Is(err, registry.ErrNotLeader)
}

func (im *importer) publish(ctx context.Context, ph *phase, b *batch) (dup bool, index uint64, err error) {
	fail := func(code string, err error) (bool, uint64, error) {
		return false, 0, &BatchError{Phase: ph.name, Batch: b.num, CommandID: b.id, Code: code, Err: err}
	}
	cmd := &registryv1.Command{Issuer: ph.issuer, Id: b.id, IssuedAtUnixMs: time.Now().UnixMilli(), Mutations: b.muts}
	raw, err := registry.SignCommand(cmd, ph.key)
	if err != nil {
		return fail("", fmt.Errorf("sign: %w", err))
	}
	delay := im.opt.RetryBackoff
	for try := 1; ; try++ {
		if err := ctx.Err(); err != nil {
			return fail("", context.Cause(ctx))
		}
		resp, err := im.p.Publish(ctx, []string{raw})
		if err == nil {
			rs := resp.GetResults()
			if len(rs) != 1 {
				return fail("", fmt.Errorf("publish returned %d results for 1 command", len(rs)))
			}
			r := rs[0]
			if r.GetErrorCode() != "" {
				return fail(r.GetErrorCode(), registry.ErrorFromCode(r.GetErrorCode(), r.GetErrorMessage()))
			}
			if r.GetCommandId() != "" && r.GetCommandId() != b.id {
				return fail("", fmt.Errorf("result is for command %q", r.GetCommandId()))
			}
			return r.GetDuplicate(), max(r.GetIndex(), resp.GetIndex()), nil
		}
		if ctx.Err() != nil {
			return fail("", fmt.Errorf("%w (after %d tries: %v)", context.Cause(ctx), try, err))
		}
		if !retryable(err) || try == maxTries {
			return fail("", fmt.Errorf("publish (try %d of %d): %w", try, maxTries, err))
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return fail("", fmt.Errorf("%w (after %d tries: %v)", context.Cause(ctx), try, err))
		case <-t.C:
		}
		delay = min(2*delay, maxBackoff)
	}
}
