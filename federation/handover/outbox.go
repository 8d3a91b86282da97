package handover

import (
	"container/heap"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/verbund/verbund/federation/envelope"
	"github.com/verbund/verbund/keys"
	federationv1 "github.com/verbund/verbund/proto/gen/verbund/federation/v1"
)

// SendHandover seals a case to another organisation and stores it in the
// durable outbox. It returns only once the outbox entry is on disk; the
// deliverer sends it in the background. With an idempotency key, a retried
// request returns the first request's result.
func (s *Service) SendHandover(ctx context.Context, req *federationv1.SendHandoverRequest) (*federationv1.SendHandoverResponse, error) {
	done, err := s.enter()
	if err != nil {
		return nil, err
	}
	defer done()
	if err := s.admitWrite(); err != nil {
		return nil, err
	}
	to := req.GetRecipientOrganisationId()
	if to == "" {
		return nil, errInvalid("recipient_organisation_id is required")
	}
	if to == s.cfg.OrgID {
		return nil, errInvalid("cannot hand a case over to the own organisation")
	}
	idem := req.GetIdempotencyKey()
	if idem != "" && !validToken(idem, 16, 128) {
		return nil, errInvalid("idempotency_key must be 16-128 characters of [A-Za-z0-9-_.]")
	}
	var data json.RawMessage
	if req.GetCaseJson() != "" {
		data = json.RawMessage(req.GetCaseJson())
	}
	var atts []envelope.Attachment
	for i, a := range req.GetAttachments() {
		att := envelope.NewAttachment(a.GetName(), a.GetMediaType(), a.GetData())
		if a.GetSha256() != "" && a.GetSha256() != att.SHA256 {
			return nil, errInvalid("attachment %d: sha256 does not match its data", i)
		}
		atts = append(atts, att)
	}
	code := req.GetTrackingCode()
	if code == "" {
		code = newTrackingCode()
	} else if err := checkCode(code); err != nil {
		return nil, err
	}
	now := s.now()
	jti := envelope.NewID()
	caseID := req.GetCaseId()
	if caseID == "" {
		caseID = "C-" + jti
	}
	claims := envelope.Claims{
		ID: jti, Issuer: s.cfg.OrgID, Audience: to,
		IssuedAt: now, Expiry: now.Add(s.cfg.HandoverTTL),
		CaseID: caseID, TrackingCode: code, ServiceKey: req.GetLeikaKey(), Reason: req.GetReason(),
		Data: data, Attachments: atts,
	}
	if err := claims.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidArgument, err)
	}
	res, err := s.sealAndStore(ctx, claims, idem, nil)
	if err != nil {
		return nil, err
	}
	return &federationv1.SendHandoverResponse{
		HandoverId: res.HandoverID, TrackingCode: res.TrackingCode, CaseId: res.CaseID,
		State: federationv1.OutboxState_OUTBOX_STATE_PENDING, EnvelopeSha256: res.Digest,
	}, nil
}

// sealAndStore seals claims to their audience and writes the outbox entry
// (plus extra writes in the same commit), returning once it is durable.
func (s *Service) sealAndStore(ctx context.Context, claims envelope.Claims, idem string, extra func(t *tx) error) (sendResult, error) {
	token, err := envelope.SealFor(ctx, claims, s.cfg.Keys.SigningKey(), s.cfg.Resolver)
	if err != nil {
		if errors.Is(err, envelope.ErrUnknownKey) {
			return sendResult{}, fmt.Errorf("%w: recipient %q: %v", ErrNotFound, claims.Audience, err)
		}
		return sendResult{}, err
	}
	d := envelope.Digest(token)
	digest := hex.EncodeToString(d[:])
	rec := outboxRecord{
		ID: claims.ID, Kind: kindHandover, To: claims.Audience, Digest: digest, State: statePending,
		CreatedAt: ms(s.now()), TrackingCode: claims.TrackingCode, CaseID: claims.CaseID, Leika: claims.ServiceKey,
	}
	res := sendResult{HandoverID: claims.ID, TrackingCode: claims.TrackingCode, CaseID: claims.CaseID, Digest: digest}
	created := false
	actor := ActorFrom(ctx)
	write := func(t *tx) error {
		created = false
		t.actor = actor
		if idem != "" {
			var prev sendResult
			ok, err := t.getJSON(key(pRequest, idem), &prev)
			if err != nil {
				return err
			}
			if ok {
				res = prev
				return nil
			}
		}
		if extra != nil {
			if err := extra(t); err != nil {
				return err
			}
		}
		if err := s.putOutbox(t, rec, token); err != nil {
			return err
		}
		t.set(trackKey(claims.TrackingCode, claims.ID), []byte("out"))
		if err := t.count(rec.CreatedAt, rec.Leika, rec.To, false, func(c *statsCounters) { c.Handovers++ }); err != nil {
			return err
		}
		if idem != "" {
			if err := t.setJSON(key(pRequest, idem), res); err != nil {
				return err
			}
		}
		t.audit(AuditHandoverSent, claims.ID, digest, claims.Audience)
		created = true
		return nil
	}
	commit := func() error {
		if err := s.com.do(write); err != nil {
			return err
		}
		if created {
			s.stats.sent.Add(1)
			s.del.add(rec.ID, rec.To, 0)
		}
		return nil
	}
	if s.detached(fpOutboxWrite, func() { _ = commit() }) {
		return res, nil // a broken variant answers before the write
	}
	if err := commit(); err != nil {
		return sendResult{}, err
	}
	if err := s.crashAt(fpAfterOutboxWrite, res.HandoverID); err != nil {
		return sendResult{}, err
	}
	return res, nil
}

// putOutbox writes a new outbox entry and marks it pending.
func (s *Service) putOutbox(t *tx, rec outboxRecord, token string) error {
	seq, err := t.nextSeq(pOutboxOrder)
	if err != nil {
		return err
	}
	rec.Seq = seq
	if err := t.setJSON(key(pOutbox, rec.ID), rec); err != nil {
		return err
	}
	t.set(key(pOutboxToken, rec.ID), []byte(token))
	t.set(seqKey(pOutboxOrder, seq), []byte(rec.ID))
	t.set(key(pPending, rec.ID), nil)
	return nil
}

// ListOutbox lists outbox entries in creation order.
func (s *Service) ListOutbox(ctx context.Context, req *federationv1.ListOutboxRequest) (*federationv1.ListOutboxResponse, error) {
	out := &federationv1.ListOutboxResponse{}
	st := req.GetState()
	next, err := listInOrder(ctx, s, pOutboxOrder, pOutbox, req, func(rec *outboxRecord) bool {
		if st != federationv1.OutboxState_OUTBOX_STATE_UNSPECIFIED && outboxStateProto(rec.State) != st {
			return false
		}
		out.Entries = append(out.Entries, rec.proto())
		return true
	})
	if err != nil {
		return nil, err
	}
	out.NextPageToken = next
	return out, nil
}

// ---- deliverer ----

type task struct {
	id       string
	to       string // recipient, for the liveness check
	due      time.Time
	attempts uint32
}

type taskHeap []*task

func (h taskHeap) Len() int           { return len(h) }
func (h taskHeap) Less(i, j int) bool { return h[i].due.Before(h[j].due) }
func (h taskHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *taskHeap) Push(x any)        { *h = append(*h, x.(*task)) }
func (h *taskHeap) Pop() any {
	old := *h
	t := old[len(old)-1]
	*h = old[:len(old)-1]
	return t
}

// deliverer sends pending outbox entries, with retries, exponential
// backoff with jitter, and pauses while the recipient is not alive.
type deliverer struct {
	s      *Service
	mu     sync.Mutex
	tasks  map[string]*task
	queue  taskHeap
	parked map[string][]*task // recipient -> tasks waiting for it to be alive
	wake   chan struct{}
}

func newDeliverer(s *Service) *deliverer {
	return &deliverer{s: s, tasks: map[string]*task{}, parked: map[string][]*task{}, wake: make(chan struct{}, 1)}
}

// park holds t until Liveness says its recipient is alive again; parked
// tasks cost nothing until then (checked every RetryMin).
func (d *deliverer) park(t *task) {
	d.mu.Lock()
	d.parked[t.to] = append(d.parked[t.to], t)
	d.mu.Unlock()
}

// unpark schedules the tasks of every recipient that is alive again,
// spread over RetryMin so they do not all hit the recipient at once.
func (d *deliverer) unpark() {
	l := d.s.cfg.Liveness
	d.mu.Lock()
	if len(d.parked) == 0 {
		d.mu.Unlock()
		return
	}
	orgs := make([]string, 0, len(d.parked))
	for org := range d.parked {
		orgs = append(orgs, org)
	}
	d.mu.Unlock()
	var ready []string
	for _, org := range orgs {
		if l == nil || l.Alive(org) {
			ready = append(ready, org)
		}
	}
	if len(ready) == 0 {
		return
	}
	d.mu.Lock()
	now := time.Now()
	spread := int64(d.s.cfg.RetryMin)
	for _, org := range ready {
		for _, t := range d.parked[org] {
			t.due = now.Add(time.Duration(rand.Int64N(spread/4 + 1)))
			heap.Push(&d.queue, t)
		}
		delete(d.parked, org)
	}
	d.mu.Unlock()
	d.signal()
}

func (d *deliverer) pending() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.tasks)
}

// add schedules id (to recipient to) for delivery now, if not already
// known.
func (d *deliverer) add(id, to string, attempts uint32) {
	d.mu.Lock()
	if _, ok := d.tasks[id]; !ok {
		t := &task{id: id, to: to, due: time.Now(), attempts: attempts}
		d.tasks[id] = t
		heap.Push(&d.queue, t)
	}
	d.mu.Unlock()
	d.signal()
}

func (d *deliverer) signal() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

func (d *deliverer) reschedule(t *task, after time.Duration) {
	d.mu.Lock()
	t.due = time.Now().Add(after)
	heap.Push(&d.queue, t)
	d.mu.Unlock()
	d.signal()
}

func (d *deliverer) done(t *task) {
	d.mu.Lock()
	delete(d.tasks, t.id)
	d.mu.Unlock()
}

// load schedules every pending entry of the outbox (after a restart).
func (d *deliverer) load() error {
	type p struct {
		id, to   string
		attempts uint32
	}
	var ids []p
	err := d.s.view(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = []byte(pPending)
		opts.PrefetchValues = false
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.ValidForPrefix(opts.Prefix); it.Next() {
			id := string(it.Item().Key()[len(pPending):])
			var rec outboxRecord
			if _, err := getJSON(txn, key(pOutbox, id), &rec); err != nil {
				return err
			}
			ids = append(ids, p{id, rec.To, rec.Attempts})
		}
		return nil
	})
	for _, x := range ids {
		d.add(x.id, x.to, x.attempts)
	}
	return err
}

func (d *deliverer) run(ctx context.Context) {
	if err := d.load(); err != nil {
		d.s.log.Error("cannot load the outbox", "err", err)
	}
	work := make(chan *task)
	var wg sync.WaitGroup
	for range d.s.cfg.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for t := range work {
				d.attempt(ctx, t)
			}
		}()
	}
	defer func() { close(work); wg.Wait() }()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	recheck := time.NewTicker(d.s.cfg.RetryMin)
	defer recheck.Stop()
	for {
		d.mu.Lock()
		var next *task
		var wait time.Duration = -1
		if len(d.queue) > 0 {
			if w := time.Until(d.queue[0].due); w <= 0 {
				next = heap.Pop(&d.queue).(*task)
			} else {
				wait = w
			}
		}
		d.mu.Unlock()
		if next != nil {
			select {
			case work <- next:
				continue
			case <-ctx.Done():
				return
			}
		}
		var tc <-chan time.Time
		if wait >= 0 {
			timer.Reset(wait)
			tc = timer.C
		}
		select {
		case <-ctx.Done():
			return
		case <-d.wake:
		case <-tc:
		case <-recheck.C:
			d.unpark()
		}
		if tc != nil && !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
	}
}

// backoff returns the delay before the next attempt after n failed ones:
// exponential from RetryMin, capped at RetryMax, with "equal jitter"
// (half fixed, half random) so that retries of many entries spread out.
func (d *deliverer) backoff(n uint32) time.Duration {
	lo, hi := d.s.cfg.RetryMin, d.s.cfg.RetryMax
	b := lo
	for i := uint32(1); i < n && b < hi; i++ {
		b *= 2
	}
	b = min(b, hi)
	half := b / 2
	return half + time.Duration(rand.Int64N(int64(half)+1))
}

func (d *deliverer) attempt(ctx context.Context, t *task) {
	s := d.s
	if ctx.Err() != nil {
		d.reschedule(t, 0)
		return
	}
	if l := s.cfg.Liveness; l != nil && t.to != "" && !l.Alive(t.to) {
		// Do not spend attempts on a node gossip says is down.
		s.stats.paused.Add(1)
		d.park(t)
		return
	}
	var rec outboxRecord
	var token string
	found := false
	err := s.view(func(txn *badger.Txn) error {
		ok, err := getJSON(txn, key(pOutbox, t.id), &rec)
		if err != nil || !ok {
			return err
		}
		it, err := txn.Get(key(pOutboxToken, t.id))
		if err != nil {
			return err
		}
		b, err := it.ValueCopy(nil)
		token = string(b)
		found = err == nil
		return err
	})
	if err != nil {
		s.log.Error("outbox entry unreadable", "id", t.id, "err", err)
		d.reschedule(t, d.backoff(t.attempts+1))
		return
	}
	if !found || rec.State != statePending {
		d.done(t)
		return
	}
	s.stats.attempts.Add(1)
	receipt, err := d.send(ctx, &rec, token)
	var at keys.Moment // where the receipt is recorded
	if err == nil {
		at, err = s.position(ctx, s.now())
	}
	if err == nil {
		if _, verr := envelope.VerifyReceipt(ctx, receipt, s.cfg.Resolver, rec.To, envelope.Digest(token), keys.Now(at.Time())); verr != nil {
			s.stats.badReceipts.Add(1)
			err = fmt.Errorf("receipt does not verify: %w", verr)
			s.log.Warn("bad receipt", "id", rec.ID, "to", rec.To, "err", verr) // retried: not ErrRefused
		}
	}
	if err != nil {
		d.failed(ctx, t, &rec, err)
		return
	}
	if herr := s.crashAt(fpBeforeReceiptStore, rec.ID); herr != nil {
		d.reschedule(t, d.backoff(1))
		return
	}
	kind := AuditHandoverDelivered
	if rec.Kind == kindEvent {
		kind = AuditEventDelivered
	}
	attempts := t.attempts
	stored := false
	err = s.com.do(func(tx *tx) error {
		stored = false
		var cur outboxRecord
		ok, err := tx.getJSON(key(pOutbox, rec.ID), &cur)
		if err != nil || !ok || cur.State != statePending {
			return err
		}
		cur.State = stateDelivered
		cur.Receipt = receipt
		cur.DeliveredAt, cur.ReceiptIndex = at.UnixMs, at.Index
		cur.Attempts = max(cur.Attempts, attempts) + 1
		cur.LastError = ""
		if err := tx.setJSON(key(pOutbox, rec.ID), cur); err != nil {
			return err
		}
		tx.del(key(pPending, rec.ID))
		tx.audit(kind, rec.ID, rec.Digest, rec.To)
		stored = true
		return nil
	})
	if err != nil {
		d.reschedule(t, d.backoff(t.attempts+1))
		return
	}
	if stored {
		s.stats.delivered.Add(1)
	}
	d.done(t)
}

func (d *deliverer) send(ctx context.Context, rec *outboxRecord, token string) (string, error) {
	s := d.s
	endpoint, err := s.cfg.Directory.Endpoint(ctx, rec.To)
	if err != nil {
		return "", fmt.Errorf("endpoint of %s: %w", rec.To, err)
	}
	peer := s.cfg.Dialer.Peer(endpoint)
	actx, cancel := context.WithTimeout(ctx, s.cfg.DeliveryTimeout)
	defer cancel()
	if rec.Kind == kindEvent {
		return peer.DeliverEvent(actx, token)
	}
	return peer.DeliverHandover(actx, token)
}

func (d *deliverer) failed(ctx context.Context, t *task, rec *outboxRecord, cause error) {
	s := d.s
	t.attempts++
	msg := cause.Error()
	if len(msg) > 1024 {
		msg = msg[:1024]
	}
	attempts := t.attempts // the closure below runs on the committer
	final := permanent(cause) || (s.cfg.MaxAttempts > 0 && int(attempts) >= s.cfg.MaxAttempts)
	if ctx.Err() != nil {
		final = false
	}
	update := func(tx *tx) error {
		var cur outboxRecord
		ok, err := tx.getJSON(key(pOutbox, rec.ID), &cur)
		if err != nil || !ok || cur.State != statePending {
			return err
		}
		cur.Attempts = max(cur.Attempts, attempts)
		cur.LastError = msg
		if final {
			cur.State = stateFailed
			tx.del(key(pPending, rec.ID))
			tx.audit(AuditDeliveryFailed, rec.ID, rec.Digest, rec.To)
		}
		return tx.setJSON(key(pOutbox, rec.ID), cur)
	}
	if final {
		if err := s.com.do(update); err != nil {
			d.reschedule(t, d.backoff(t.attempts))
			return
		}
		s.stats.failed.Add(1)
		s.log.Warn("delivery failed for good", "id", rec.ID, "kind", rec.Kind, "to", rec.To, "attempts", t.attempts, "err", cause)
		d.done(t)
		return
	}
	s.stats.retries.Add(1)
	// Bookkeeping only: losing it in a crash costs nothing.
	s.com.submit(update)
	wait := d.backoff(t.attempts)
	s.log.Debug("delivery failed, will retry", "id", rec.ID, "to", rec.To, "attempt", t.attempts, "in", wait, "err", cause)
	d.reschedule(t, wait)
}
