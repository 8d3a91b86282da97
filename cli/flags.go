package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
)

// Flag parsing shared by every command, client and server side.

// flagSet is the flag.FlagSet of one (sub)command with its usage text.
type flagSet struct {
	*flag.FlagSet
	synopsis string // without "verbund", e.g. "orgs get ID [flags]"
	summary  string
	checks   []func() error // run after parsing; errors are usage errors
}

// newFlagSet creates the FlagSet of a command. Parse errors are reported
// by parse, not printed by the flag package.
func newFlagSet(synopsis, summary string) *flagSet {
	fs := flag.NewFlagSet("verbund "+synopsis, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return &flagSet{FlagSet: fs, synopsis: synopsis, summary: summary}
}

// check adds a validation run after the flags are parsed.
func (f *flagSet) check(fn func() error) { f.checks = append(f.checks, fn) }

// usage returns the usage text: synopsis, summary and flags.
func (f *flagSet) usage() string {
	var b strings.Builder
	fmt.Fprintf(&b, "usage: verbund %s\n\n%s\n", f.synopsis, f.summary)
	first := true
	f.VisitAll(func(fl *flag.Flag) {
		if first {
			b.WriteString("\nflags:\n")
			first = false
		}
		dash := "--"
		if len(fl.Name) == 1 {
			dash = "-"
		}
		arg, help := flag.UnquoteUsage(fl)
		if arg == "value" && fl.DefValue == "false" { // a bool flag
			arg = ""
		}
		fmt.Fprintf(&b, "  %s%s", dash, fl.Name)
		if arg != "" {
			fmt.Fprintf(&b, " %s", strings.ToUpper(arg))
		}
		fmt.Fprintf(&b, "\n      %s", help)
		switch fl.DefValue {
		case "", "0", "false", "0s":
		default:
			fmt.Fprintf(&b, " (default %s)", fl.DefValue)
		}
		b.WriteString("\n")
	})
	return b.String()
}

// usageErr returns a usage error that prints this command's usage.
func (f *flagSet) usageErr(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...), usage: f.usage()}
}

// parse parses args, allowing flags before and after positional arguments
// ("--" ends the flags), runs the checks and verifies that there are
// between minPos and maxPos positional arguments (maxPos < 0: no limit).
// what describes the expected arguments for the error message.
func (f *flagSet) parse(env *Env, args []string, minPos, maxPos int, what string) ([]string, error) {
	var pos []string
	for {
		if err := f.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fmt.Fprint(env.Stdout, f.usage())
				return nil, flag.ErrHelp
			}
			return nil, f.usageErr("%v", err)
		}
		rest := f.Args()
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			pos = append(pos, rest...)
			break
		}
		if len(rest) == 0 {
			break
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
	switch {
	case len(pos) < minPos:
		return nil, f.usageErr("missing %s", what)
	case maxPos >= 0 && len(pos) > maxPos:
		return nil, f.usageErr("unexpected argument %q", pos[maxPos])
	}
	for _, c := range f.checks {
		if err := c(); err != nil {
			return nil, f.usageErr("%v", err)
		}
	}
	return pos, nil
}
