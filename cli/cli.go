// Package cli implements the verbund command line: a dispatcher over one
// static table of commands (commands.go) and the commands themselves, one
// file per command group. Client commands (client_*.go) talk to a node over
// its Connect API; server-side commands (server_*.go) run a node in this
// process (node, dev) or prepare and load a network (certs, import).
//
// Conventions for commands:
//   - one flag.FlagSet per (sub)command, built with newFlagSet; flags may be
//     given before or after positional arguments;
//   - a command returns an error; Main prints it as "verbund <cmd>: <err>"
//     and exits 1, or, for errors made with usageErrorf / flagSet.usageErr,
//     prints the message and the command's usage and exits 2;
//   - "-h" prints the usage on stdout and exits 0 (flag.ErrHelp).
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"unicode"
	"unicode/utf8"
)

// Command is one top-level subcommand of verbund.
type Command struct {
	// Name is the word after "verbund", e.g. "orgs" or "node".
	Name string
	// Summary is a one-line description shown in "verbund help".
	Summary string
	// Run executes the command with the arguments after Name.
	Run func(ctx context.Context, env *Env, args []string) error
}

// Env is what a command may use to talk to the user.
type Env struct {
	Stdout, Stderr io.Writer
	// Stdin is read by commands that accept "-" as a file; nil means os.Stdin.
	Stdin io.Reader
}

func (e *Env) stdin() io.Reader {
	if e.Stdin == nil {
		return os.Stdin
	}
	return e.Stdin
}

// lookup returns the command of cmds called name.
func lookup(cmds []Command, name string) (Command, bool) {
	for _, c := range cmds {
		if c.Name == name {
			return c, true
		}
	}
	return Command{}, false
}

// sortedCommands returns cmds sorted by name, as "verbund help" lists them.
func sortedCommands(cmds []Command) []Command {
	cs := slices.Clone(cmds)
	slices.SortFunc(cs, func(a, b Command) int { return strings.Compare(a.Name, b.Name) })
	return cs
}

// Main runs the verbund command line and returns the process exit code:
// 0 on success, 1 if the command failed, 2 on a usage error.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return run(ctx, &Env{Stdout: stdout, Stderr: stderr}, args)
}

func run(ctx context.Context, env *Env, args []string) int {
	return dispatch(ctx, env, commands, args)
}

// dispatch runs the command of cmds named by args[0] and returns the exit code.
func dispatch(ctx context.Context, env *Env, cmds []Command, args []string) int {
	if len(args) == 0 {
		printUsage(env.Stderr, cmds)
		return 2
	}
	name, rest := args[0], args[1:]
	switch name {
	case "help", "-h", "-help", "--help":
		if len(rest) == 0 || rest[0] == "help" {
			printUsage(env.Stdout, cmds)
			return 0
		}
		// "verbund help orgs list" is "verbund orgs list -h".
		name, rest = rest[0], append(slices.Clone(rest[1:]), "-h")
	}
	cmd, ok := lookup(cmds, name)
	if !ok {
		fmt.Fprintf(env.Stderr, "verbund: unknown command %q\n\n", name)
		printUsage(env.Stderr, cmds)
		return 2
	}
	return report(env, cmd.Name, cmd.Run(ctx, env, rest))
}

// report prints err for the command at path and returns the exit code.
func report(env *Env, path string, err error) int {
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return 0
	}
	for {
		var se *subError
		if !errors.As(err, &se) {
			break
		}
		path += " " + se.name
		err = se.err
	}
	var ue *usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(env.Stderr, "verbund %s: %s\n", path, ue.msg)
		if ue.usage != "" {
			fmt.Fprintf(env.Stderr, "\n%s", ue.usage)
		}
		return 2
	}
	fmt.Fprintf(env.Stderr, "verbund %s: %v\n", path, err)
	return 1
}

func printUsage(w io.Writer, cmds []Command) {
	fmt.Fprint(w, `Verbund: the shared service registry of German municipalities.

usage: verbund <command> [arguments]

commands:
`)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, c := range sortedCommands(cmds) {
		fmt.Fprintf(tw, "  %s\t%s\n", c.Name, c.Summary)
	}
	tw.Flush()
	fmt.Fprint(w, `
Run "verbund help <command>" or "verbund <command> -h" for details.
Client commands talk to the node at --addr (default $VERBUND_ADDR, else `+defaultAddr+`).
`)
}

// usageError is an error in how the command was invoked (exit code 2).
type usageError struct {
	msg   string
	usage string // printed after the message; may be empty
}

func (e *usageError) Error() string { return e.msg }

// usageErrorf returns a usage error without usage text.
func usageErrorf(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// subError carries the name of the subcommand that failed so that Main can
// print "verbund orgs get: ...".
type subError struct {
	name string
	err  error
}

func (e *subError) Error() string { return e.name + ": " + e.err.Error() }
func (e *subError) Unwrap() error { return e.err }

// subcommand is one command of a group such as "orgs list".
type subcommand struct {
	name    string
	summary string
	run     func(ctx context.Context, env *Env, args []string) error
}

// group builds a top-level command that dispatches to subcommands.
func group(name, summary string, subs []subcommand) Command {
	var b strings.Builder
	fmt.Fprintf(&b, "usage: verbund %s <command> [flags]\n\n%s\n\ncommands:\n", name, sentence(summary))
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	for _, s := range subs {
		fmt.Fprintf(tw, "  %s\t%s\n", s.name, s.summary)
	}
	tw.Flush()
	fmt.Fprintf(&b, "\nRun \"verbund %s <command> -h\" for the flags of a command.\n", name)
	usage := b.String()

	return Command{
		Name:    name,
		Summary: summary,
		Run: func(ctx context.Context, env *Env, args []string) error {
			if len(args) == 0 {
				return &usageError{msg: "missing command", usage: usage}
			}
			switch args[0] {
			case "-h", "-help", "--help", "help":
				fmt.Fprint(env.Stdout, usage)
				return flag.ErrHelp
			}
			for _, s := range subs {
				if s.name == args[0] {
					if err := s.run(ctx, env, args[1:]); err != nil {
						return &subError{name: s.name, err: err}
					}
					return nil
				}
			}
			return &usageError{msg: fmt.Sprintf("unknown command %q", args[0]), usage: usage}
		},
	}
}

// sentence capitalises s and ends it with a full stop.
func sentence(s string) string {
	r, n := utf8.DecodeRuneInString(s)
	s = string(unicode.ToUpper(r)) + s[n:]
	if !strings.HasSuffix(s, ".") {
		s += "."
	}
	return s
}
