package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/verbund/verbund/federation/peertls"
)

// certsCommand is "verbund certs": the network's PKI, made offline.
func certsCommand() Command {
	return group("certs", "manage the network's TLS certificates and gossip key", []subcommand{
		{"init-ca", "create the network's certificate authority (held offline by the operator)", certsInitCA},
		{"issue", "issue a node certificate signed by the network's CA", certsIssue},
		{"gossip-key", "print a fresh gossip encryption key (base64, 32 bytes)", certsGossipKey},
	})
}

const (
	caCertName = "ca.pem"
	caKeyName  = "ca-key.pem"
)

func certsInitCA(_ context.Context, env *Env, args []string) error {
	fs := newFlagSet("certs init-ca --dir DIR [flags]",
		"Create the network's certificate authority: DIR/"+caCertName+" (for every node) and DIR/"+caKeyName+
			" (mode 0600; keep it offline, it signs node certificates).")
	var (
		dir, cn  string
		validity time.Duration
	)
	fs.StringVar(&dir, "dir", "", "`dir` for "+caCertName+" and "+caKeyName+" (created if missing)")
	fs.StringVar(&cn, "cn", "Verbund network CA", "common `name` of the CA")
	fs.DurationVar(&validity, "validity", 87600*time.Hour, "how long the CA is valid, e.g. 87600h (10 years)")
	fs.check(func() error {
		switch {
		case dir == "":
			return errors.New("--dir is required")
		case strings.TrimSpace(cn) == "":
			return errors.New("--cn must not be empty")
		case validity <= 0:
			return errors.New("--validity must be positive")
		}
		return nil
	})
	if _, err := fs.parse(env, args, 0, 0, ""); err != nil {
		return err
	}
	certPEM, keyPEM, err := peertls.NewCA(cn, validity)
	if err != nil {
		return err
	}
	certPath, keyPath := filepath.Join(dir, caCertName), filepath.Join(dir, caKeyName)
	if err := writeCertAndKey(certPath, certPEM, keyPath, keyPEM, false); err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "wrote %s and %s (CA %q, valid for %v)\n", certPath, keyPath, cn, validity)
	fmt.Fprintf(env.Stdout, "Keep %s offline; copy %s to every node.\n", keyPath, certPath)
	return nil
}

// certHostList is a repeatable --host flag; a value may also list several
// hosts separated by commas.
type certHostList []string

func (l *certHostList) String() string { return strings.Join(*l, ",") }

func (l *certHostList) Set(v string) error {
	for h := range strings.SplitSeq(v, ",") {
		if h = strings.TrimSpace(h); h != "" {
			*l = append(*l, h)
		}
	}
	return nil
}

func certsIssue(_ context.Context, env *Env, args []string) error {
	fs := newFlagSet("certs issue --ca-dir DIR --node ID --host HOST [--host HOST ...] [flags]",
		"Issue a certificate for a node, signed by the CA in DIR: OUT/<ID>.pem and OUT/<ID>-key.pem (mode 0600).\n"+
			"The hosts are the DNS names and IP addresses other nodes use to reach the node (Raft and API addresses).")
	var (
		caDir, nodeID, out string
		hosts              certHostList
		validity           time.Duration
		force              bool
	)
	fs.StringVar(&caDir, "ca-dir", "", "`dir` with "+caCertName+" and "+caKeyName)
	fs.StringVar(&nodeID, "node", "", "node `id` (as in Raft and gossip)")
	fs.Var(&hosts, "host", "`host` name or IP address of the node; repeat for several")
	fs.StringVar(&out, "out", ".", "`dir` for the certificate and key (created if missing)")
	fs.DurationVar(&validity, "validity", 8760*time.Hour, "how long the certificate is valid, e.g. 8760h (1 year; never past the CA)")
	fs.BoolVar(&force, "force", false, "replace existing certificate and key files (rotation)")
	fs.check(func() error {
		switch {
		case caDir == "":
			return errors.New("--ca-dir is required")
		case nodeID == "":
			return errors.New("--node is required")
		case len(hosts) == 0:
			return errors.New("at least one --host is required")
		case out == "":
			return errors.New("--out must not be empty")
		case validity <= 0:
			return errors.New("--validity must be positive")
		}
		return peertls.CheckNodeID(nodeID)
	})
	if _, err := fs.parse(env, args, 0, 0, ""); err != nil {
		return err
	}
	caPEM, err := os.ReadFile(filepath.Join(caDir, caCertName))
	if err != nil {
		return fmt.Errorf("read CA certificate: %w", err)
	}
	caKeyPEM, err := peertls.ReadKeyFile(filepath.Join(caDir, caKeyName))
	if err != nil {
		return err
	}
	certPEM, keyPEM, err := peertls.IssueNodeCert(caPEM, caKeyPEM, nodeID, hosts, validity)
	if err != nil {
		return err
	}
	b, err := peertls.FromPEM(caPEM, certPEM, keyPEM) // what a node will check
	if err != nil {
		return err
	}
	certPath, keyPath := filepath.Join(out, nodeID+".pem"), filepath.Join(out, nodeID+"-key.pem")
	if err := writeCertAndKey(certPath, certPEM, keyPath, keyPEM, force); err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "wrote %s and %s (node %q, hosts %s, valid until %s)\n",
		certPath, keyPath, b.NodeID(), strings.Join(hosts, ", "), b.Leaf().NotAfter.UTC().Format(time.RFC3339))
	return nil
}

func certsGossipKey(_ context.Context, env *Env, args []string) error {
	fs := newFlagSet("certs gossip-key",
		"Print a fresh random 32-byte gossip encryption key, base64-encoded. All nodes of a network share it; treat it as a secret.")
	if _, err := fs.parse(env, args, 0, 0, ""); err != nil {
		return err
	}
	k, err := peertls.NewGossipKey()
	if err != nil {
		return err
	}
	fmt.Fprintln(env.Stdout, k)
	return nil
}

// writeCertAndKey writes a certificate (mode 0644) and its private key
// (mode 0600), creating dir if needed. Unless overwrite, it refuses to
// replace existing files; with overwrite it replaces them atomically.
func writeCertAndKey(certPath string, certPEM []byte, keyPath string, keyPEM []byte, overwrite bool) error {
	if err := os.MkdirAll(filepath.Dir(keyPath), 0o700); err != nil {
		return err
	}
	if !overwrite {
		for _, p := range []string{certPath, keyPath} {
			if _, err := os.Lstat(p); err == nil {
				return fmt.Errorf("%s already exists; refusing to overwrite it", p)
			}
		}
	}
	if err := writeFileMode(keyPath, keyPEM, 0o600, overwrite); err != nil {
		return err
	}
	if err := writeFileMode(certPath, certPEM, 0o644, overwrite); err != nil {
		if !overwrite {
			os.Remove(keyPath)
		}
		return err
	}
	return nil
}

// writeFileMode writes data to path with exactly mode. Without overwrite
// it fails if path exists; with overwrite it replaces path atomically.
func writeFileMode(path string, data []byte, mode os.FileMode, overwrite bool) (err error) {
	var f *os.File
	if overwrite {
		f, err = os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	} else {
		f, err = os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	}
	if err != nil {
		return err
	}
	name := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(name)
		}
	}()
	if err = f.Chmod(mode); err != nil { // not subject to the umask
		return err
	}
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if overwrite {
		return os.Rename(name, path)
	}
	return nil
}
