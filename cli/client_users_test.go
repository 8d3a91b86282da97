package cli

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/verbund/verbund/node"
)

// TestUsersAndLogin: the first admin is created offline in a stopped
// node's data dir, signs in with `verbund login` (token stored 0600 in the
// config dir), manages users through the API with the stored token; a
// disabled user's token stops working; without a token the protected
// commands are refused with a hint to sign in.
func TestUsersAndLogin(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("VERBUND_CONFIG_DIR", filepath.Join(t.TempDir(), "config"))
	t.Setenv("VERBUND_TOKEN", "")
	t.Setenv("VERBUND_PASSWORD", "")
	code, out, errOut := cli(t, strings.NewReader("first admin password\n"), "users", "add", "root", "--roles", "admin,clerk", "--name", "Rita Root", "--password-stdin", "--data", dir)
	if code != 0 {
		t.Fatalf("users add --data: exit %d: %s %s", code, out, errOut)
	}
	contains(t, "users add", out, []string{"Created user root (clerk,admin)"})

	cfg := node.DefaultConfig()
	cfg.OrgID, cfg.DataDir, cfg.HTTPAddr = "cli-test-org", dir, "127.0.0.1:0"
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.RaftAddr = ln.Addr().String()
	ln.Close()
	cfg.Bootstrap, cfg.Genesis = true, true
	cfg.HeartbeatTimeout, cfg.ElectionTimeout, cfg.LeaderLeaseTimeout = 100*time.Millisecond, 100*time.Millisecond, 50*time.Millisecond
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	n, err := node.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	if _, err := os.Stat(filepath.Join(dir, "initial-admin-password")); !os.IsNotExist(err) {
		t.Fatalf("an initial admin was created although a user existed: %v", err)
	}
	addr := n.APIURL()

	if code, out, errOut := cli(t, nil, "users", "list", "--addr", addr); code == 0 || !strings.Contains(errOut, "verbund login") {
		t.Fatalf("users list without a token: exit %d: %s %s", code, out, errOut)
	}
	if code, out, errOut := cli(t, strings.NewReader("wrong password!!\n"), "login", "root", "--addr", addr); code == 0 {
		t.Fatalf("login with a wrong password: exit 0: %s %s", out, errOut)
	}
	code, out, errOut = cli(t, strings.NewReader("first admin password\n"), "login", "root", "--addr", addr)
	if code != 0 {
		t.Fatalf("login: exit %d: %s %s", code, out, errOut)
	}
	contains(t, "login", out, []string{"Signed in to " + addr + " as root"})
	tf, _ := tokenFile()
	st, err := os.Stat(tf)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("token file %s: %v %v, want mode 0600", tf, st, err)
	}

	code, out, errOut = cli(t, nil, "users", "add", "erika", "--roles", "clerk", "--name", "Erika Mustermann", "--addr", addr)
	if code != 0 {
		t.Fatalf("users add: exit %d: %s %s", code, out, errOut)
	}
	contains(t, "users add", out, []string{"Created user erika (clerk)", "Password (shown once): "})
	pw := strings.TrimSpace(out[strings.Index(out, "Password (shown once): ")+len("Password (shown once): "):])
	code, out, errOut = cli(t, nil, "users", "list", "--addr", addr)
	if code != 0 {
		t.Fatalf("users list: exit %d: %s %s", code, out, errOut)
	}
	contains(t, "users list", out, []string{"erika", "Erika Mustermann", "root", "clerk,admin"})

	t.Setenv("VERBUND_PASSWORD", pw)
	code, out, errOut = cli(t, nil, "login", "erika", "--addr", addr, "--print")
	if code != 0 {
		t.Fatalf("login --print: exit %d: %s %s", code, out, errOut)
	}
	erikaTok := strings.TrimSpace(out)
	if code, out, errOut := cli(t, nil, "users", "whoami", "--addr", addr, "--token", erikaTok); code != 0 || !strings.Contains(out, "erika (Erika Mustermann) of cli-test-org") {
		t.Fatalf("whoami: exit %d: %s %s", code, out, errOut)
	}
	if code, out, errOut := cli(t, nil, "users", "list", "--addr", addr, "--token", erikaTok); code == 0 || !strings.Contains(errOut, "permission_denied") {
		t.Fatalf("a clerk lists users: exit %d: %s %s", code, out, errOut)
	}
	if code, out, errOut := cli(t, nil, "users", "disable", "erika", "--addr", addr); code != 0 {
		t.Fatalf("disable: exit %d: %s %s", code, out, errOut)
	}
	if code, out, errOut := cli(t, nil, "users", "whoami", "--addr", addr, "--token", erikaTok); code == 0 || !strings.Contains(errOut, "unauthenticated") {
		t.Fatalf("a disabled user's token: exit %d: %s %s", code, out, errOut)
	}
}
