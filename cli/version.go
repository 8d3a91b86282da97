package cli

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"

	"github.com/verbund/verbund/node"
	"github.com/verbund/verbund/registry"
)

// versionCommand is "verbund version": what this binary is.
func versionCommand() Command {
	return Command{
		Name:    "version",
		Summary: "print the version of this binary, its Go version and source revision",
		Run:     version,
	}
}

func version(_ context.Context, env *Env, args []string) error {
	fs := newFlagSet("version", "Print the version of this verbund binary, the Go version it was built with and,\n"+
		"for a binary built from a git checkout, the source revision. Nodes report their\n"+
		"version to each other: \"verbund members\" shows it per node.")
	if _, err := fs.parse(env, args, 0, 0, ""); err != nil {
		return err
	}
	bi, _ := debug.ReadBuildInfo()
	writeVersion(env.Stdout, node.Version, bi)
	return nil
}

// writeVersion writes "verbund VERSION" and what bi (may be nil) tells
// about the build: Go version and platform, module version when installed
// from a module, VCS revision and commit time when built from a checkout.
func writeVersion(w io.Writer, v string, bi *debug.BuildInfo) {
	fmt.Fprintf(w, "verbund %s\n", v)
	goVersion := runtime.Version()
	var module, revision, at string
	var modified bool
	if bi != nil {
		if bi.GoVersion != "" {
			goVersion = bi.GoVersion
		}
		if mv := bi.Main.Version; mv != "" && mv != "(devel)" {
			module = mv
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				revision = s.Value
			case "vcs.time":
				at = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
	}
	if revision != "" && modified {
		revision += " (modified)"
	}
	t := newKV(w)
	t.add("Go", strings.Join([]string{goVersion, runtime.GOOS + "/" + runtime.GOARCH}, " "))
	t.add("Module", module)
	t.add("Revision", revision)
	t.add("Committed", at)
	// The highest registry feature level (version gate) this binary supports.
	t.add("Feature level", strconv.FormatUint(uint64(registry.SupportedFeatureLevel()), 10))
	t.flush()
}
