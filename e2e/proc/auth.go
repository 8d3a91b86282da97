package proc

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"connectrpc.com/connect"

	nodev1 "github.com/verbund/verbund/proto/gen/verbund/node/v1"
	"github.com/verbund/verbund/proto/gen/verbund/node/v1/nodev1connect"
)

// TestUser is the user Authorize gives a node: every role.
const TestUser = "e2e"

// Authorize makes the node at api (data dir dir, started at least once, so
// its initial admin exists) usable by the process tests: with the initial
// admin's password (dir/initial-admin-password) it creates TestUser with
// every role (kept if it exists), signs TestUser in with `verbund login`
// (the token is stored for api in $VERBUND_CONFIG_DIR, where the client
// commands Run starts find it: set that variable for the test first) and
// returns the token for Go clients (BearerClient).
func Authorize(bin, dir, api string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pwFile := filepath.Join(dir, "initial-admin-password")
	var adminPW []byte
	if err := WaitUntil(30*time.Second, func() (err error) {
		adminPW, err = os.ReadFile(pwFile)
		return err
	}); err != nil {
		return "", err
	}
	hc := &http.Client{Timeout: 10 * time.Second}
	authc := nodev1connect.NewAuthServiceClient(hc, api)
	res, err := authc.SignIn(ctx, connect.NewRequest(&nodev1.SignInRequest{Username: "admin", Password: strings.TrimSpace(string(adminPW))}))
	if err != nil {
		return "", fmt.Errorf("sign in as the initial admin of %s: %w", api, err)
	}
	admin := nodev1connect.NewAuthServiceClient(BearerClient(res.Msg.GetToken()), api)
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	pw := hex.EncodeToString(b)
	_, err = admin.CreateUser(ctx, connect.NewRequest(&nodev1.CreateUserRequest{
		User:     &nodev1.User{Username: TestUser, DisplayName: "E2E Test", Roles: []nodev1.Role{nodev1.Role_ROLE_CLERK, nodev1.Role_ROLE_PUBLISHER, nodev1.Role_ROLE_APPROVER, nodev1.Role_ROLE_ADMIN}},
		Password: pw,
	}))
	if connect.CodeOf(err) == connect.CodeAlreadyExists {
		_, err = admin.ResetPassword(ctx, connect.NewRequest(&nodev1.ResetPasswordRequest{Username: TestUser, Password: pw}))
	}
	if err != nil {
		return "", fmt.Errorf("create %s on %s: %w", TestUser, api, err)
	}
	cmd := exec.CommandContext(ctx, bin, "login", TestUser, "--addr", api)
	cmd.Env = append(os.Environ(), "VERBUND_PASSWORD="+pw)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("verbund login on %s: %v: %s", api, err, out)
	}
	tok, err := authc.SignIn(ctx, connect.NewRequest(&nodev1.SignInRequest{Username: TestUser, Password: pw}))
	if err != nil {
		return "", err
	}
	return tok.Msg.GetToken(), nil
}

// BearerClient is an HTTP client that sends token as a bearer token.
func BearerClient(token string) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: bearer{token: token, inner: http.DefaultTransport}}
}

type bearer struct {
	token string
	inner http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.inner.RoundTrip(r)
}
