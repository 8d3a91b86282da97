package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/verbund/verbund/keys"
	"github.com/verbund/verbund/node"
	registryv1 "github.com/verbund/verbund/proto/gen/verbund/registry/v1"
	"github.com/verbund/verbund/registry"
)

// initCommand is "verbund init": a new organisation's data dir, keys and
// configuration, before it joins a network.
func initCommand() Command {
	return Command{
		Name:    "init",
		Summary: "create an organisation's data dir: signing and encryption keys and a config file (then: verbund join)",
		Run:     runInit,
	}
}

// configFile is the name of the configuration verbund init writes into the
// data dir. It is the YAML file "verbund node --config" reads (the keys are
// the node's flag names, see nodeFlags), plus the organisation's identity
// (kind, state, ars, endpoint) that "verbund join" sends:
//
//	org: "091620000000"
//	org-name: Landeshauptstadt München
//	kind: municipality
//	state: "09"
//	ars: "091620000000"
//	data-dir: /var/lib/verbund
//	endpoint: https://verbund.muenchen.example:8443
const configFile = "verbund.yaml"

// loadConfig reads dir's configuration.
func loadConfig(dir string) (nodeFlags, error) {
	var f nodeFlags
	b, err := os.ReadFile(filepath.Join(dir, configFile))
	if err != nil {
		return f, fmt.Errorf("config: %w (run verbund init first)", err)
	}
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		return f, fmt.Errorf("config %s: %w", filepath.Join(dir, configFile), err)
	}
	return f, nil
}

func runInit(ctx context.Context, env *Env, args []string) error {
	fs := newFlagSet("init --org ID --kind K --name N [--state SS] [--ars ARS] --data DIR [flags]",
		"Create organisation ID's data dir DIR: its Ed25519 signing key and P-256 encryption key\n"+
			"(DIR/keys/signing.jwk, encryption.jwk, mode 0600) and the config file DIR/"+configFile+",\n"+
			"which \"verbund node --config\" reads and \"verbund join\" sends. For the network operator\n"+
			"(--kind network-operator) also an offline recovery key: its private half is written to\n"+
			"DIR/"+node.RecoveryOfflineFile+" for you to move to offline storage; only the\n"+
			"public half stays. Run it again to see the keys' fingerprint; existing keys are kept.")
	var org, kind, name, state, ars, dir, endpoint string
	fs.StringVar(&org, "org", "", "organisation `id`: its 12-digit ARS, or a slug such as ssc-oberland")
	fs.StringVar(&kind, "kind", "", "organisation `kind`: "+kindFlagValues())
	fs.StringVar(&name, "name", "", "organisation `name`")
	fs.StringVar(&state, "state", "", "two-digit state `code` (default: the ARS's first two digits)")
	fs.StringVar(&ars, "ars", "", "12-digit `ARS` of its area (default: --org if it is one)")
	fs.StringVar(&dir, "data", "", "data `dir` to create (the node's --data-dir)")
	fs.StringVar(&endpoint, "endpoint", "", "API `url` other nodes will call (the node's peer URL), sent by verbund join")
	fs.check(func() error {
		switch {
		case org == "" || kind == "" || name == "" || dir == "":
			return errors.New("--org, --kind, --name and --data are required")
		case !registry.ValidOrgID(org):
			return fmt.Errorf("--org %q: want a 12-digit ARS or a slug ([a-z][a-z0-9-]{2,62})", org)
		case state != "" && !reStateCode.MatchString(state):
			return fmt.Errorf("--state %q: want two digits", state)
		case ars != "" && !registry.ValidARS(ars):
			return fmt.Errorf("--ars %q: want 12 digits", ars)
		}
		_, err := parseKind(kind)
		return err
	})
	if _, err := fs.parse(env, args, 0, 0, ""); err != nil {
		return err
	}
	k, _ := parseKind(kind)
	if ars == "" && registry.ValidARS(org) {
		ars = org
	}
	if state == "" && ars != "" {
		state = ars[:2]
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	if prev, err := loadConfig(abs); err == nil && prev.Org != org {
		return fmt.Errorf("%s is the data dir of organisation %s already", abs, prev.Org)
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}
	sig, sigNew, err := keys.LoadOrGenerate(filepath.Join(abs, "keys", "signing.jwk"), keys.GenerateSigning, org+"-sig")
	if err != nil {
		return err
	}
	enc, _, err := keys.LoadOrGenerate(filepath.Join(abs, "keys", "encryption.jwk"), keys.GenerateEncryption, org+"-enc")
	if err != nil {
		return err
	}
	var recNote string
	if k == registryv1.OrganisationKind_ORGANISATION_KIND_NETWORK_OPERATOR {
		rec, offline, created, err := node.EnsureRecoveryKey(abs, org)
		if err != nil {
			return err
		}
		recNote = fmt.Sprintf("Recovery key:    %s (public half in keys/%s)\n", rec.GetKid(), node.RecoveryPublicFile)
		if created {
			recNote += fmt.Sprintf("\n  !! The private recovery key is in %s.\n"+
				"  !! Move it to offline storage NOW (e.g. a USB stick in a safe) and delete it here.\n"+
				"  !! It is the only way to recover the operator's signing key if it is lost:\n"+
				"  !!   verbund keys recover %s --new-keys NEWDIR --key <that file> --as %s --reason ...\n", offline, org, org)
		}
	}
	// Only these keys: every key in the file overrides the node's default.
	cfg := struct {
		Org      string `yaml:"org"`
		OrgName  string `yaml:"org-name"`
		Kind     string `yaml:"kind"`
		State    string `yaml:"state,omitempty"`
		ARS      string `yaml:"ars,omitempty"`
		DataDir  string `yaml:"data-dir"`
		Endpoint string `yaml:"endpoint,omitempty"`
	}{org, name, kind, state, ars, abs, endpoint}
	b, err := yaml.Marshal(cfg)
	if err != nil {
		return err
	}
	header := "# Written by verbund init. Read by \"verbund node --config\" (keys: the node's flags)\n" +
		"# and by \"verbund join\" (the organisation's identity: kind, state, ars, endpoint).\n"
	if err := os.WriteFile(filepath.Join(abs, configFile), append([]byte(header), b...), 0o600); err != nil {
		return fmt.Errorf("write config: %w", err)
	}
	pks, err := nodeKeys(abs)
	if err != nil {
		return err
	}
	verb := "Created"
	if !sigNew {
		verb = "Kept the existing"
	}
	w := env.Stdout
	fmt.Fprintf(w, "%s data dir %s for %s (%s, %s).\n", verb, abs, org, name, kindName(k))
	fmt.Fprintf(w, "Signing key:     %s\nEncryption key:  %s\n%s", sig.KeyID, enc.KeyID, recNote)
	fmt.Fprintf(w, "Keys SHA-256:    %s\nConfig:          %s\n\n", keysDigest(pks), filepath.Join(abs, configFile))
	if k == registryv1.OrganisationKind_ORGANISATION_KIND_NETWORK_OPERATOR {
		fmt.Fprintf(w, "Next: start the first node of the network with\n  verbund node --config %s --bootstrap --genesis\n", filepath.Join(abs, configFile))
	} else {
		fmt.Fprintf(w, "Next: ask to join the network with\n  verbund join --network <API URL of a node> --data %s\n"+
			"then give your approver (your state's agency) the fingerprint above, out of band.\n", abs)
	}
	return nil
}
