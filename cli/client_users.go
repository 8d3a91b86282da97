package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"connectrpc.com/connect"

	"github.com/verbund/verbund/node/auth"
	nodev1 "github.com/verbund/verbund/proto/gen/verbund/node/v1"
	"github.com/verbund/verbund/proto/gen/verbund/node/v1/nodev1connect"
)

// The people of a node: "verbund login" signs in and stores the token,
// "verbund users" manages the node's users (an ADMIN's token, or --data
// DIR on a stopped node: the first admin, and a way back in).

func (o *clientOpts) auth() nodev1connect.AuthServiceClient {
	return nodev1connect.NewAuthServiceClient(o.http(), o.addr)
}

// ---- token storage ----

// tokenFile is where `verbund login` keeps tokens, per node address:
// $VERBUND_CONFIG_DIR/tokens.json, else <user config dir>/verbund/tokens.json.
func tokenFile() (string, error) {
	dir := os.Getenv("VERBUND_CONFIG_DIR")
	if dir == "" {
		base, err := os.UserConfigDir()
		if err != nil {
			return "", err
		}
		dir = filepath.Join(base, "verbund")
	}
	return filepath.Join(dir, "tokens.json"), nil
}

type storedTokenEntry struct {
	Token     string `json:"token"`
	Username  string `json:"username"`
	ExpiresAt int64  `json:"expires_at_unix_ms"`
}

func readTokens() (map[string]storedTokenEntry, string, error) {
	path, err := tokenFile()
	if err != nil {
		return nil, "", err
	}
	m := map[string]storedTokenEntry{}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return m, path, nil
	}
	if err != nil {
		return nil, path, err
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, path, fmt.Errorf("%s: %w", path, err)
	}
	return m, path, nil
}

// storedToken returns the unexpired token `verbund login` stored for addr.
func storedToken(addr string) string {
	m, _, err := readTokens()
	if err != nil {
		return ""
	}
	e, ok := m[addr]
	if !ok || time.Now().UnixMilli() >= e.ExpiresAt {
		return ""
	}
	return e.Token
}

// storeToken saves a token for addr, readable by this user only.
func storeToken(addr string, e storedTokenEntry) (string, error) {
	m, path, err := readTokens()
	if err != nil {
		return "", err
	}
	now := time.Now().UnixMilli()
	for k, v := range m {
		if v.ExpiresAt <= now {
			delete(m, k)
		}
	}
	m[addr] = e
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return "", err
	}
	if err := os.Chmod(tmp, 0o600); err != nil {
		return "", err
	}
	return path, os.Rename(tmp, path)
}

// readSecret reads a password: env first (if set), else the first line of
// stdin.
func readSecret(env *Env, envVar string) (string, error) {
	if v := os.Getenv(envVar); v != "" {
		return v, nil
	}
	line, err := bufio.NewReader(env.stdin()).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", err
	}
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		return "", fmt.Errorf("no password on standard input (or in %s)", envVar)
	}
	return line, nil
}

// ---- login ----

func loginCommand() Command {
	return Command{Name: "login", Summary: "sign in to a node as one of its users and store the token", Run: login}
}

func login(ctx context.Context, env *Env, args []string) error {
	fs := newFlagSet("login USERNAME [flags]",
		"Sign in to the node at --addr. The password is read from VERBUND_PASSWORD or the first line\n"+
			"of standard input. The token (valid for the node's token lifetime, 15 minutes by default)\n"+
			"is stored for --addr in the user's config directory (mode 0600) and used by the other\n"+
			"commands; --print writes it to standard output instead (for VERBUND_TOKEN).")
	o := clientFlags(fs, false)
	var printTok bool
	fs.BoolVar(&printTok, "print", false, "print the token instead of storing it")
	pos, err := fs.parse(env, args, 1, 1, "USERNAME")
	if err != nil {
		return err
	}
	pw, err := readSecret(env, "VERBUND_PASSWORD")
	if err != nil {
		return err
	}
	ctx, cancel := o.context(ctx)
	defer cancel()
	o.token = "" // signing in needs no token
	res, err := o.auth().SignIn(ctx, connect.NewRequest(&nodev1.SignInRequest{Username: pos[0], Password: pw}))
	if err != nil {
		return o.rpcErr(err)
	}
	if printTok {
		fmt.Fprintln(env.Stdout, res.Msg.GetToken())
		return nil
	}
	path, err := storeToken(o.addr, storedTokenEntry{Token: res.Msg.GetToken(), Username: pos[0], ExpiresAt: res.Msg.GetExpiresAtUnixMs()})
	if err != nil {
		return fmt.Errorf("store the token: %w", err)
	}
	fmt.Fprintf(env.Stdout, "Signed in to %s as %s (%s) until %s; token stored in %s\n", o.addr, pos[0],
		strings.Join(auth.RoleNames(res.Msg.GetUser().GetRoles()), ", "),
		time.UnixMilli(res.Msg.GetExpiresAtUnixMs()).Local().Format("15:04:05"), path)
	return nil
}

// ---- users ----

func usersCommand() Command {
	return group("users", "manage the people of a node: users, roles, passwords, client certificates", []subcommand{
		{"add", "create a user (with --data DIR: offline, while the node is stopped)", usersAdd},
		{"list", "list the users", usersList},
		{"disable", "disable a user: its tokens stop working at once", func(ctx context.Context, env *Env, args []string) error {
			return usersSetDisabled(ctx, env, args, true)
		}},
		{"enable", "enable a disabled user", func(ctx context.Context, env *Env, args []string) error {
			return usersSetDisabled(ctx, env, args, false)
		}},
		{"reset", "set a new password (generated unless given on standard input)", usersReset},
		{"roles", "replace a user's roles", usersRoles},
		{"certs", "add or remove client certificate fingerprints of a user (mTLS for programs)", usersCerts},
		{"whoami", "show who the token at hand belongs to", usersWhoAmI},
	})
}

// userTarget is either the node's API (--addr, an ADMIN's token) or its
// data dir (--data, node stopped).
type userTarget struct {
	o    *clientOpts
	data string
}

func userFlags(fs *flagSet) *userTarget {
	t := &userTarget{o: clientFlags(fs, false)}
	fs.StringVar(&t.data, "data", "", "the node's data `dir`: change the user store directly (the node must be stopped)")
	return t
}

// offline opens the store under --data.
func (t *userTarget) offline() (*auth.Store, error) {
	s, err := auth.Open(auth.Dir(t.data), nil, nil)
	if err != nil {
		return nil, fmt.Errorf("%w (is the node running? stop it, or use --addr with an admin's token)", err)
	}
	return s, nil
}

func parseRoles(s string) ([]nodev1.Role, error) {
	var out []nodev1.Role
	for _, r := range strings.Split(s, ",") {
		r = strings.ToUpper(strings.TrimSpace(r))
		if r == "" {
			continue
		}
		v, ok := nodev1.Role_value["ROLE_"+r]
		if !ok || v == 0 {
			return nil, fmt.Errorf("unknown role %q: want clerk, publisher, approver or admin", r)
		}
		out = append(out, nodev1.Role(v))
	}
	return out, nil
}

func writeUsers(w io.Writer, users []*nodev1.User) {
	tw := newTable(w)
	row(tw, "USERNAME", "NAME", "ROLES", "STATE", "CERTIFICATES")
	for _, u := range users {
		state := "enabled"
		if u.GetDisabled() {
			state = "disabled"
		}
		row(tw, u.GetUsername(), u.GetDisplayName(), strings.ToLower(strings.Join(auth.RoleNames(u.GetRoles()), ",")), state, fmt.Sprint(len(u.GetCertificateSha256())))
	}
	tw.Flush()
}

func usersAdd(ctx context.Context, env *Env, args []string) error {
	fs := newFlagSet("users add USERNAME --roles ROLES [--name NAME] [--password-stdin] [--cert-sha256 FP] [--data DIR | flags]",
		"Create a user of the node. Roles: clerk (inbox, outbox, case actions, sending handovers),\n"+
			"publisher (the organisation's own record and offerings from the console), approver\n"+
			"(governance decisions), admin (users, keys; on the network operator's node also\n"+
			"leadership and gossip keys). Without --password-stdin a password is generated and printed once.")
	t := userFlags(fs)
	var roles, name, cert string
	var pwStdin bool
	fs.StringVar(&roles, "roles", "", "comma-separated `roles`: clerk, publisher, approver, admin")
	fs.StringVar(&name, "name", "", "display `name` (recorded with the user's actions)")
	fs.StringVar(&cert, "cert-sha256", "", "hex SHA-256 `fingerprint` of a client certificate that authenticates as this user")
	fs.BoolVar(&pwStdin, "password-stdin", false, "read the password from the first line of standard input")
	pos, err := fs.parse(env, args, 1, 1, "USERNAME")
	if err != nil {
		return err
	}
	rs, err := parseRoles(roles)
	if err != nil {
		return fs.usageErr("--roles: %v", err)
	}
	if len(rs) == 0 {
		return fs.usageErr("--roles is required")
	}
	u := &nodev1.User{Username: pos[0], DisplayName: name, Roles: rs}
	if cert != "" {
		u.CertificateSha256 = []string{cert}
	}
	pw := ""
	if pwStdin {
		if pw, err = readSecret(env, "VERBUND_NEW_PASSWORD"); err != nil {
			return err
		}
	}
	var created *nodev1.User
	var generated string
	if t.data != "" {
		s, err := t.offline()
		if err != nil {
			return err
		}
		defer s.Close()
		if created, generated, err = s.Create(u, pw); err != nil {
			return err
		}
	} else {
		ctx, cancel := t.o.context(ctx)
		defer cancel()
		res, err := t.o.auth().CreateUser(ctx, connect.NewRequest(&nodev1.CreateUserRequest{User: u, Password: pw}))
		if err != nil {
			return t.o.rpcErr(err)
		}
		created, generated = res.Msg.GetUser(), res.Msg.GetPassword()
	}
	if t.o.json() {
		return writeJSON(env.Stdout, &nodev1.CreateUserResponse{User: created, Password: generated})
	}
	fmt.Fprintf(env.Stdout, "Created user %s (%s)\n", created.GetUsername(), strings.ToLower(strings.Join(auth.RoleNames(created.GetRoles()), ",")))
	if generated != "" {
		fmt.Fprintf(env.Stdout, "Password (shown once): %s\n", generated)
	}
	return nil
}

func usersList(ctx context.Context, env *Env, args []string) error {
	fs := newFlagSet("users list [--data DIR | flags]", "List the node's users.")
	t := userFlags(fs)
	if _, err := fs.parse(env, args, 0, 0, ""); err != nil {
		return err
	}
	var users []*nodev1.User
	if t.data != "" {
		s, err := t.offline()
		if err != nil {
			return err
		}
		defer s.Close()
		if users, err = s.List(); err != nil {
			return err
		}
	} else {
		ctx, cancel := t.o.context(ctx)
		defer cancel()
		res, err := t.o.auth().ListUsers(ctx, connect.NewRequest(&nodev1.ListUsersRequest{}))
		if err != nil {
			return t.o.rpcErr(err)
		}
		users = res.Msg.GetUsers()
	}
	return t.o.emit(env, &nodev1.ListUsersResponse{Users: users}, nil, func(w io.Writer) { writeUsers(w, users) })
}

// update applies req offline or through the API.
func (t *userTarget) update(ctx context.Context, req *nodev1.UpdateUserRequest) (*nodev1.User, error) {
	if t.data != "" {
		s, err := t.offline()
		if err != nil {
			return nil, err
		}
		defer s.Close()
		return s.Update(req)
	}
	ctx, cancel := t.o.context(ctx)
	defer cancel()
	res, err := t.o.auth().UpdateUser(ctx, connect.NewRequest(req))
	if err != nil {
		return nil, t.o.rpcErr(err)
	}
	return res.Msg.GetUser(), nil
}

func (t *userTarget) emitUser(env *Env, u *nodev1.User, what string) error {
	return t.o.emit(env, &nodev1.UpdateUserResponse{User: u}, nil, func(w io.Writer) {
		fmt.Fprintf(w, "%s %s\n", what, u.GetUsername())
		writeUsers(w, []*nodev1.User{u})
	})
}

func usersSetDisabled(ctx context.Context, env *Env, args []string, disabled bool) error {
	verb := "enable"
	if disabled {
		verb = "disable"
	}
	fs := newFlagSet("users "+verb+" USERNAME [--data DIR | flags]", strings.ToUpper(verb[:1])+verb[1:]+" a user.")
	t := userFlags(fs)
	pos, err := fs.parse(env, args, 1, 1, "USERNAME")
	if err != nil {
		return err
	}
	u, err := t.update(ctx, &nodev1.UpdateUserRequest{Username: pos[0], Disabled: disabled, SetDisabled: true})
	if err != nil {
		return err
	}
	return t.emitUser(env, u, strings.ToUpper(verb[:1])+verb[1:]+"d")
}

func usersRoles(ctx context.Context, env *Env, args []string) error {
	fs := newFlagSet("users roles USERNAME ROLES [--data DIR | flags]", "Replace a user's roles (comma-separated: clerk, publisher, approver, admin).")
	t := userFlags(fs)
	pos, err := fs.parse(env, args, 2, 2, "USERNAME ROLES")
	if err != nil {
		return err
	}
	rs, err := parseRoles(pos[1])
	if err != nil {
		return fs.usageErr("%v", err)
	}
	u, err := t.update(ctx, &nodev1.UpdateUserRequest{Username: pos[0], Roles: rs, SetRoles: true})
	if err != nil {
		return err
	}
	return t.emitUser(env, u, "Updated")
}

func usersCerts(ctx context.Context, env *Env, args []string) error {
	fs := newFlagSet("users certs USERNAME [--add FP] [--remove FP] [--data DIR | flags]",
		"Add or remove client certificate fingerprints (hex SHA-256 of the certificate's DER) of a user.")
	t := userFlags(fs)
	var add, remove string
	fs.StringVar(&add, "add", "", "`fingerprint` to add")
	fs.StringVar(&remove, "remove", "", "`fingerprint` to remove")
	pos, err := fs.parse(env, args, 1, 1, "USERNAME")
	if err != nil {
		return err
	}
	req := &nodev1.UpdateUserRequest{Username: pos[0]}
	if add != "" {
		req.AddCertificateSha256 = []string{add}
	}
	if remove != "" {
		req.RemoveCertificateSha256 = []string{remove}
	}
	u, err := t.update(ctx, req)
	if err != nil {
		return err
	}
	return t.o.emit(env, &nodev1.UpdateUserResponse{User: u}, nil, func(w io.Writer) {
		fmt.Fprintf(w, "Certificates of %s:\n", u.GetUsername())
		for _, fp := range u.GetCertificateSha256() {
			fmt.Fprintf(w, "  %s\n", fp)
		}
	})
}

func usersReset(ctx context.Context, env *Env, args []string) error {
	fs := newFlagSet("users reset USERNAME [--password-stdin] [--data DIR | flags]",
		"Set a new password for a user; without --password-stdin one is generated and printed once.")
	t := userFlags(fs)
	var pwStdin bool
	fs.BoolVar(&pwStdin, "password-stdin", false, "read the password from the first line of standard input")
	pos, err := fs.parse(env, args, 1, 1, "USERNAME")
	if err != nil {
		return err
	}
	pw := ""
	if pwStdin {
		if pw, err = readSecret(env, "VERBUND_NEW_PASSWORD"); err != nil {
			return err
		}
	}
	var generated string
	if t.data != "" {
		s, err := t.offline()
		if err != nil {
			return err
		}
		defer s.Close()
		if generated, err = s.SetPassword(pos[0], pw); err != nil {
			return err
		}
	} else {
		ctx, cancel := t.o.context(ctx)
		defer cancel()
		res, err := t.o.auth().ResetPassword(ctx, connect.NewRequest(&nodev1.ResetPasswordRequest{Username: pos[0], Password: pw}))
		if err != nil {
			return t.o.rpcErr(err)
		}
		generated = res.Msg.GetPassword()
	}
	if t.o.json() {
		return writeJSON(env.Stdout, &nodev1.ResetPasswordResponse{Password: generated})
	}
	fmt.Fprintf(env.Stdout, "Password of %s reset\n", pos[0])
	if generated != "" {
		fmt.Fprintf(env.Stdout, "New password (shown once): %s\n", generated)
	}
	return nil
}

func usersWhoAmI(ctx context.Context, env *Env, args []string) error {
	fs := newFlagSet("users whoami [flags]", "Show the user the token at hand (--token, VERBUND_TOKEN or `verbund login`) belongs to.")
	o := clientFlags(fs, false)
	if _, err := fs.parse(env, args, 0, 0, ""); err != nil {
		return err
	}
	ctx, cancel := o.context(ctx)
	defer cancel()
	res, err := o.auth().WhoAmI(ctx, connect.NewRequest(&nodev1.WhoAmIRequest{}))
	if err != nil {
		return o.rpcErr(err)
	}
	return o.emit(env, res.Msg, nil, func(w io.Writer) {
		u := res.Msg.GetUser()
		fmt.Fprintf(w, "%s (%s) of %s, by %s; roles %s\n", u.GetUsername(), u.GetDisplayName(), res.Msg.GetOrganisationId(),
			res.Msg.GetMethod(), strings.ToLower(strings.Join(auth.RoleNames(u.GetRoles()), ",")))
	})
}
