package cli

import (
	"slices"
	"testing"

	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
)

// TestProvidersAreaByNameOrPostcode: --area takes a municipality's name or
// postcode as well as an ARS or AGS; one match (or one exact match) is
// used, several are listed and the command fails, none fails clearly.
func TestProvidersAreaByNameOrPostcode(t *testing.T) {
	te := newTestEnv(t)
	tests := []struct {
		name     string
		area     string
		wantCode int
		wantArea string // the area FindProviders was asked for
		stderr   []string
	}{
		{name: "ARS as is", area: "091620000000", wantArea: "091620000000"},
		{name: "AGS as is", area: "09162000", wantArea: "09162000"},
		{name: "name", area: "München", wantArea: "091620000000"},
		{name: "name, two words, any case", area: "landeshauptstadt MÜN", wantArea: "091620000000"},
		{name: "postcode", area: "80331", wantArea: "091620000000"},
		{name: "postcode prefix", area: "803", wantArea: "091620000000"},
		{name: "ambiguous", area: "Landeshauptstadt", wantCode: 1, stderr: []string{
			`--area "Landeshauptstadt" matches several municipalities; give one's ARS:`,
			"091620000000  Landeshauptstadt München (80331)", "051110000000  Landeshauptstadt Düsseldorf"}},
		{name: "nothing", area: "Hamburg", wantCode: 1, stderr: []string{`--area "Hamburg": no municipality matches`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			te.fake.mu.Lock()
			te.fake.areas = nil
			te.fake.mu.Unlock()
			code, stdout, stderr := cli(t, nil, "providers", "--service", "99115005000000", "--area", tc.area, "--addr", te.addr)
			if code != tc.wantCode {
				t.Fatalf("exit code %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tc.wantCode, stdout, stderr)
			}
			contains(t, "stderr", stderr, tc.stderr)
			te.fake.mu.Lock()
			areas := slices.Clone(te.fake.areas)
			te.fake.mu.Unlock()
			want := []string{}
			if tc.wantArea != "" {
				want = []string{tc.wantArea}
			}
			if !slices.Equal(append([]string{}, areas...), want) {
				t.Fatalf("FindProviders asked for %q, want %q", areas, want)
			}
		})
	}
}

// TestPickArea: among several matches, the one whose name before the
// register's designation (or whose postcode) is exactly the value wins.
func TestPickArea(t *testing.T) {
	muni := func(ars, name, pc string) *registryv1.Organisation {
		return &registryv1.Organisation{Id: ars, Ars: ars, Name: name, PostalCode: pc}
	}
	munich := []*registryv1.Organisation{
		muni("091620000000", "München, Landeshauptstadt", "80313"),
		muni("091840119119", "Garching b.München, St", "85748"),
		muni("091750122122", "Grafing b.München, St", "85567"),
	}
	neustadt := []*registryv1.Organisation{
		muni("073160000000", "Neustadt an der Weinstraße, Stadt", "67433"),
		muni("032410012012", "Neustadt am Rübenberge, Stadt", "31535"),
	}
	for _, tc := range []struct {
		area  string
		found []*registryv1.Organisation
		want  string
	}{
		{"muenchen", munich, "091620000000"},
		{"MÜNCHEN", munich, "091620000000"},
		{"85748", munich, "091840119119"},
		{"Neustadt", neustadt, ""},
		{"Neustadt an der Weinstrasse", neustadt, "073160000000"},
	} {
		got, err := pickArea(tc.area, tc.found)
		if got != tc.want || (tc.want == "") != (err != nil) {
			t.Errorf("pickArea(%q) = %q, %v; want %q", tc.area, got, err, tc.want)
		}
	}
}
