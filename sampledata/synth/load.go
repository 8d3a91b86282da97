package synth

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"connectrpc.com/connect"

	"github.com/verbund/verbund/registry"
)

type loader struct {
	ctx    context.Context
	cancel context.CancelFunc
	p      Publisher
	opt    LoadOptions
	start  time.Time
	sem    chan struct{}
	wg     sync.WaitGroup

	mu   sync.Mutex
	prog Progress
	err  error
}

func (l *loader) failed() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

func (l *loader) wait() { l.wg.Wait() }

func (l *loader) send(req []Command) {
	select {
	case l.sem <- struct{}{}:
	case <-l.ctx.Done():
		return
	}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		defer func() { <-l.sem }()
		err := l.publish(req)
		l.mu.Lock()
		defer l.mu.Unlock()
		if err != nil {
			if l.err == nil {
				l.err = err
				l.cancel()
			}
			return
		}
		l.prog.Elapsed = time.Since(l.start)
		if l.opt.OnProgress != nil {
			l.opt.OnProgress(l.prog)
		}
	}()
}

// retryable: the outcome is unknown or the node could not take the
// request now; the command ids make a repeat harmless.
func retryable(err error) bool {
	switch connect.CodeOf(err) {
	case connect.CodeUnavailable, connect.CodeDeadlineExceeded, connect.CodeAborted, connect.CodeUnknown:
		return true
	}
	return errors.Is(err, registry.ErrUnavailable) || errors.Is(err, registry.ErrIndeterminate) || errors.Is(err, registry.ErrNotLeader)
}

func (l *loader) publish(req []Command) error {
	signed := make([]string, len(req))
	for i, c := range req {
		signed[i] = c.Signed
	}
	delay := 250 * time.Millisecond
	for try := 1; ; try++ {
		resp, err := l.p.Publish(l.ctx, signed)
		if err == nil {
			rs := resp.GetResults()
			if len(rs) != len(req) {
				return fmt.Errorf("synth: %d results for %d commands", len(rs), len(req))
			}
			l.mu.Lock()
			defer l.mu.Unlock()
			for i, r := range rs {
				c := req[i]
				if code := r.GetErrorCode(); code != "" {
					l.prog.Errors++
					return fmt.Errorf("synth: %s command %s of %s refused: %w", c.Phase, c.ID, c.Issuer, registry.ErrorFromCode(code, r.GetErrorMessage()))
				}
				l.prog.Commands++
				l.prog.Records += c.Records
				l.prog.Offerings += c.Offerings
				if r.GetDuplicate() {
					l.prog.Duplicates++
				}
			}
			l.prog.Index = max(l.prog.Index, resp.GetIndex())
			return nil
		}
		if l.ctx.Err() != nil || !retryable(err) || try == 5 {
			return fmt.Errorf("synth: publish %d commands (try %d): %w", len(req), try, err)
		}
		t := time.NewTimer(delay)
		select {
		case <-l.ctx.Done():
			t.Stop()
			return fmt.Errorf("synth: publish: %w", context.Cause(l.ctx))
		case <-t.C:
		}
		delay = min(2*delay, 5*time.Second)
	}
}
