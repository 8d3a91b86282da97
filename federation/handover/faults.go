package handover

// Fault injection, modelled on etcd's failpoints: the outbox and inbox
// paths name the points where the chaos tests crash a node or switch in a
// deliberately broken variant, and call one cheap hook there. Production
// runs with no faults (Config.faults is nil): every point is a nil check,
// and all faulty behaviour lives in the tests' implementation of faults.

// failpoint names a place in the outbox or inbox path.
type failpoint int

const (
	// Crash points (faults.crash).
	fpAfterOutboxWrite   failpoint = iota + 1 // SendHandover: outbox entry durable, not yet answered
	fpAfterInboxWrite                         // DeliverHandover/Event: inbox durable, receipt not returned
	fpBeforeReceiptStore                      // deliverer: receipt received and verified, not yet stored
	// fpSynced is the commit path's sync point: a write batch is durable in
	// badger, the high-water mark not yet advanced, nothing answered. The
	// power-loss tests copy the store here; an error fails the batch.
	fpSynced

	// Steps a broken variant leaves out (faults.skip).
	fpDedupe // check and write the dedupe records of tokens taken in
	fpSync   // DB.Sync after a group commit (DB opened without SyncWrites)

	// Commits a broken variant detaches from the answer (faults.detach).
	fpOutboxWrite // SendHandover's outbox write
)

// faults injects failures at failpoints. Implementations live in tests.
type faults interface {
	// crash is called at a crash point; an error simulates a crash there:
	// the operation stops, its caller gets no answer, and the durable state
	// is what was committed.
	crash(p failpoint, id string) error
	// skip reports whether the step at p is left out.
	skip(p failpoint) bool
	// detach reports whether it took over commit (running it later,
	// detached from the answer); if so the caller answers at once.
	detach(p failpoint, commit func()) bool
}

// crashAt is the crash point p for the operation on id.
func (s *Service) crashAt(p failpoint, id string) error {
	if s.cfg.faults == nil {
		return nil
	}
	return s.cfg.faults.crash(p, id)
}

// skipped reports whether a broken variant leaves out the step at p.
func (s *Service) skipped(p failpoint) bool {
	return s.cfg.faults != nil && s.cfg.faults.skip(p)
}

// detached reports whether a broken variant took over commit at p.
func (s *Service) detached(p failpoint, commit func()) bool {
	return s.cfg.faults != nil && s.cfg.faults.detach(p, commit)
}
