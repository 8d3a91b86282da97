// Command slim writes the slimmed copies of Munich's DLDB export that
// package sampledata embeds: the same JSON structure with only the fields
// the converters read. Run it through `go generate ./sampledata`.
//
//	go run ./internal/slim -src ../../shared/data/munich-dldb -out data
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/verbund/verbund/sampledata/internal/dldb"
)

// Output file names, relative to -out. Package sampledata embeds them.
const (
	ServicesOut  = "munich_services_de.slim.json"
	LocationsOut = "munich_locations_de.slim.json"
)

func main() {
	src := flag.String("src", "../../shared/data/munich-dldb", "directory with services_de.json and locations_de.json")
	out := flag.String("out", "data", "output directory")
	flag.Parse()
	if err := run(*src, *out); err != nil {
		fmt.Fprintln(os.Stderr, "slim:", err)
		os.Exit(1)
	}
}

func run(src, out string) error {
	for _, f := range []struct {
		in, out string
		slim    func([]byte) ([]byte, error)
	}{
		{"services_de.json", ServicesOut, dldb.SlimServices},
		{"locations_de.json", LocationsOut, dldb.SlimLocations},
	} {
		b, err := os.ReadFile(filepath.Join(src, f.in))
		if err != nil {
			return err
		}
		s, err := f.slim(b)
		if err != nil {
			return fmt.Errorf("%s: %w", f.in, err)
		}
		if err := os.WriteFile(filepath.Join(out, f.out), s, 0o644); err != nil {
			return err
		}
		fmt.Printf("%s: %d -> %d bytes\n", f.out, len(b), len(s))
	}
	return nil
}
