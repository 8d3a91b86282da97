package cli

import (
	"context"
	"fmt"
	"strings"

	"connectrpc.com/connect"

	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
	"github.com/verbund/verbund/registry"
)

// checkAreaFlag refuses an --area value that cannot name a municipality:
// digits only, but neither an ARS (12), an AGS (8) nor a postcode (up to 5).
func checkAreaFlag(area string) error {
	if strings.TrimSpace(area) == "" {
		return fmt.Errorf("--area is required")
	}
	if strings.Trim(area, "0123456789") == "" && len(area) != 12 && len(area) != 8 && len(area) > 5 {
		return fmt.Errorf("--area %q: want a 12-digit ARS, an 8-digit AGS, a postcode or a municipality's name", area)
	}
	return nil
}

// resolveArea turns an --area value into an ARS or AGS: those are used as
// they are; anything else (a name such as "Augsburg" or "muenchen", or a
// postcode) is looked up with the registry's place search among the
// municipalities. One match, or one whose name (before the register's
// designation, ", Stadt") or postcode is exactly the value, is taken;
// otherwise the candidates are listed and the command fails.
func resolveArea(ctx context.Context, o *clientOpts, area string) (string, error) {
	if registry.ValidARS(area) || registry.ValidAGS(area) {
		return area, nil
	}
	resp, err := o.query().ListOrganisations(ctx, connect.NewRequest(&registryv1.ListOrganisationsRequest{
		Query: area, Kind: registryv1.OrganisationKind_ORGANISATION_KIND_MUNICIPALITY, PageSize: 10, Read: o.read(),
	}))
	if err != nil {
		return "", o.rpcErr(err)
	}
	return pickArea(area, resp.Msg.GetOrganisations())
}

// pickArea chooses the municipality --area names among the place search's
// answer (best first).
func pickArea(area string, found []*registryv1.Organisation) (string, error) {
	switch len(found) {
	case 0:
		return "", fmt.Errorf("--area %q: no municipality matches (give its name, postcode, ARS or AGS)", area)
	case 1:
		return arsOf(found[0]), nil
	}
	want := registry.PlaceName(area)
	var exact []*registryv1.Organisation
	for _, m := range found {
		if registry.PlaceName(m.GetName()) == want || m.GetPostalCode() == strings.TrimSpace(area) {
			exact = append(exact, m)
		}
	}
	if len(exact) == 1 {
		return arsOf(exact[0]), nil
	}
	var b strings.Builder
	fmt.Fprintf(&b, "--area %q matches several municipalities; give one's ARS:", area)
	for _, m := range found {
		fmt.Fprintf(&b, "\n  %s  %s", arsOf(m), m.GetName())
		if pc := m.GetPostalCode(); pc != "" {
			fmt.Fprintf(&b, " (%s)", pc)
		}
	}
	if len(found) == 10 {
		b.WriteString("\n  …")
	}
	return "", fmt.Errorf("%s", b.String())
}

func arsOf(o *registryv1.Organisation) string {
	if a := o.GetArs(); a != "" {
		return a
	}
	return o.GetId()
}
