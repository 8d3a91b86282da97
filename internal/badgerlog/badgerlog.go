// Package badgerlog routes badger's log output to log/slog: errors and
// warnings with a component attribute naming the store; badger's info and
// debug chatter is dropped.
package badgerlog

import (
	"fmt"
	"log/slog"

	"github.com/dgraph-io/badger/v4"
)

// New returns a badger.Logger that writes to l, tagged component=store.
func New(l *slog.Logger, store string) badger.Logger { return logger{l: l, store: store} }

type logger struct {
	l     *slog.Logger
	store string
}

func (g logger) Errorf(f string, a ...any) {
	g.l.Error(fmt.Sprintf(f, a...), "component", g.store)
}

func (g logger) Warningf(f string, a ...any) {
	g.l.Warn(fmt.Sprintf(f, a...), "component", g.store)
}

func (logger) Infof(string, ...any)  {}
func (logger) Debugf(string, ...any) {}
