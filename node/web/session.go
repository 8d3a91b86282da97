package web

import (
	"net/http"
	"time"

	"connectrpc.com/connect"

	nodev1 "github.com/verbund/verbund/proto/gen/verbund/node/v1"
)

// Staff sessions. Signing in exchanges username and password for the
// node's bearer token (AuthService.SignIn), kept in an HttpOnly,
// SameSite=Strict cookie until it expires; every page a staff member opens
// calls the API with it, so the node's policy decides what they may see
// and do. Signing out deletes the cookie.
const sessionCookie = "verbund_session"

// User is the signed-in staff member.
type User struct {
	Username    string
	DisplayName string
	Roles       []string
	OrgID       string
	token       string
}

// Has reports whether the user has role (CLERK, PUBLISHER, APPROVER, ADMIN).
func (u *User) Has(role string) bool {
	if u == nil {
		return false
	}
	for _, r := range u.Roles {
		if r == role || r == "ROLE_"+role {
			return true
		}
	}
	return false
}

// currentUser returns the signed-in user of r, or nil (no cookie, or a
// token the node no longer accepts).
func (s *Server) currentUser(r *http.Request) *User {
	c, err := r.Cookie(sessionCookie)
	if err != nil || c.Value == "" {
		return nil
	}
	if u, ok := r.Context().Value(userKey{}).(*User); ok {
		return u
	}
	res, err := s.api.auth.WhoAmI(withCaller(r.Context(), r, c.Value), connect.NewRequest(&nodev1.WhoAmIRequest{}))
	if err != nil || res.Msg.GetUser() == nil {
		return nil
	}
	u := &User{Username: res.Msg.GetUser().GetUsername(), DisplayName: res.Msg.GetUser().GetDisplayName(),
		OrgID: res.Msg.GetOrganisationId(), token: c.Value}
	for _, role := range res.Msg.GetUser().GetRoles() {
		u.Roles = append(u.Roles, role.String())
	}
	return u
}

type userKey struct{}

// signIn checks the credentials with the node and sets the session cookie.
func (s *Server) signIn(w http.ResponseWriter, r *http.Request, username, password string) (*User, error) {
	res, err := s.api.auth.SignIn(withCaller(r.Context(), r, ""), connect.NewRequest(&nodev1.SignInRequest{Username: username, Password: password}))
	if err != nil {
		return nil, err
	}
	maxAge := int(time.Until(time.UnixMilli(res.Msg.GetExpiresAtUnixMs())).Seconds())
	if maxAge < 1 {
		maxAge = 1
	}
	http.SetCookie(w, s.cookie(r, sessionCookie, res.Msg.GetToken(), maxAge))
	u := &User{Username: res.Msg.GetUser().GetUsername(), DisplayName: res.Msg.GetUser().GetDisplayName(), OrgID: s.cfg.OrgID, token: res.Msg.GetToken()}
	for _, role := range res.Msg.GetUser().GetRoles() {
		u.Roles = append(u.Roles, role.String())
	}
	return u, nil
}

// signOut deletes the session cookie.
func (s *Server) signOut(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, s.cookie(r, sessionCookie, "", -1))
}

// staffOnly wraps a staff page: without a session it redirects to the
// sign-in page (returning here afterwards); with one, the handler gets the
// user and a context whose API calls carry the user's token.
func (s *Server) staffOnly(h func(w http.ResponseWriter, r *http.Request, u *User)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		u := s.currentUser(r)
		if u == nil {
			http.Redirect(w, r, "/amt/anmelden?weiter="+urlQueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
			return
		}
		ctx := withCaller(r.Context(), r, u.token)
		ctx = contextWithUser(ctx, u)
		h(w, r.WithContext(ctx), u)
	}
}
