// Package auth holds a node's people: its users (names, roles, argon2id
// password hashes, client certificate fingerprints) in a small badger
// database of their own, the short-lived bearer tokens the node signs for
// them, and the identity a request carries through the node.
//
// Users are node-local: they are not replicated, and a token is accepted
// only by the node that issued it (except the network operator's ADMIN
// tokens for cluster administration; see VerifyToken).
package auth

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"

	"github.com/verbund/verbund/internal/badgercheck"
	"github.com/verbund/verbund/internal/badgerlog"
	nodev1 "github.com/verbund/verbund/proto/gen/verbund/node/v1"
)

// Errors callers tell apart (node/api_auth.go maps them to Connect codes).
var (
	ErrNotFound      = errors.New("auth: no such user")
	ErrExists        = errors.New("auth: user exists")
	ErrInvalid       = errors.New("auth: invalid argument")
	ErrBadCredential = errors.New("auth: invalid credentials")
	ErrDisabled      = errors.New("auth: user disabled")
)

var usernameRE = regexp.MustCompile(`^[a-z][a-z0-9._-]{1,63}$`)

var fingerprintRE = regexp.MustCompile(`^[0-9a-f]{64}$`)

// record is a stored user.
type record struct {
	Username    string   `json:"username"`
	DisplayName string   `json:"display_name"`
	Roles       []int32  `json:"roles"`
	Disabled    bool     `json:"disabled"`
	CreatedAt   int64    `json:"created_at"`
	Certs       []string `json:"certs,omitempty"`
	Hash        string   `json:"hash"`
}

func (r *record) user() *nodev1.User {
	u := &nodev1.User{Username: r.Username, DisplayName: r.DisplayName, Disabled: r.Disabled,
		CreatedAtUnixMs: r.CreatedAt, CertificateSha256: slices.Clone(r.Certs)}
	for _, ro := range r.Roles {
		u.Roles = append(u.Roles, nodev1.Role(ro))
	}
	return u
}

// Key layout of the users database.
const (
	pUser = "u/" // u/<username> -> record (JSON)
	pCert = "c/" // c/<sha256 hex> -> username
)

// Store is a node's user database. Safe for concurrent use.
type Store struct {
	db  *badger.DB
	now func() time.Time
}

// Dir is where a node keeps its users under its data dir.
func Dir(dataDir string) string { return filepath.Join(dataDir, "users") }

// Open opens (or creates) the user database in dir. Only one process may
// hold it: `verbund users add --data DIR` works while the node is stopped.
func Open(dir string, logger *slog.Logger, now func() time.Time) (*Store, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if now == nil {
		now = time.Now
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	opts := badger.DefaultOptions(dir).
		WithSyncWrites(true).
		WithLogger(badgerlog.New(logger, "badger-users")).
		WithNumVersionsToKeep(1).
		WithMemTableSize(4 << 20).
		WithValueThreshold(4 << 10).
		WithValueLogFileSize(8 << 20).
		WithBlockCacheSize(1 << 20).
		WithChecksumVerificationMode(options.OnBlockRead).
		WithVerifyValueChecksum(true)
	db, err := badgercheck.Open(opts) // a damaged table is an error, not a panic
	if err != nil {
		return nil, fmt.Errorf("auth: open users %s: %w", dir, err)
	}
	return &Store{db: db, now: now}, nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

func checkRoles(roles []nodev1.Role) ([]int32, error) {
	var out []int32
	for _, r := range roles {
		if _, ok := nodev1.Role_name[int32(r)]; !ok || r == nodev1.Role_ROLE_UNSPECIFIED {
			return nil, fmt.Errorf("%w: unknown role %d", ErrInvalid, r)
		}
		if !slices.Contains(out, int32(r)) {
			out = append(out, int32(r))
		}
	}
	slices.Sort(out)
	return out, nil
}

// checkDisplayName bounds the name recorded with a person's actions.
func checkDisplayName(d string) error {
	if len(d) > 128 || strings.ContainsFunc(d, unicode.IsControl) || !utf8.ValidString(d) {
		return fmt.Errorf("%w: display name must be at most 128 characters of printable UTF-8", ErrInvalid)
	}
	return nil
}

func checkPassword(p string) error {
	if len(p) < MinPasswordLength {
		return fmt.Errorf("%w: a password needs at least %d characters", ErrInvalid, MinPasswordLength)
	}
	if len(p) > 1024 {
		return fmt.Errorf("%w: password too long", ErrInvalid)
	}
	return nil
}

// NormaliseFingerprint returns a certificate fingerprint as lower-case hex
// without separators, or ErrInvalid.
func NormaliseFingerprint(fp string) (string, error) {
	fp = strings.ToLower(strings.ReplaceAll(fp, ":", ""))
	if !fingerprintRE.MatchString(fp) {
		return "", fmt.Errorf("%w: %q is not a hex SHA-256 fingerprint", ErrInvalid, fp)
	}
	return fp, nil
}

// Create adds a user. An empty password generates one, which is returned
// (it is stored nowhere but as its hash).
func (s *Store) Create(u *nodev1.User, password string) (*nodev1.User, string, error) {
	if !usernameRE.MatchString(u.GetUsername()) {
		return nil, "", fmt.Errorf("%w: username must match %s", ErrInvalid, usernameRE)
	}
	roles, err := checkRoles(u.GetRoles())
	if err != nil {
		return nil, "", err
	}
	if err := checkDisplayName(u.GetDisplayName()); err != nil {
		return nil, "", err
	}
	generated := ""
	if password == "" {
		if generated, err = GeneratePassword(); err != nil {
			return nil, "", err
		}
		password = generated
	}
	if err := checkPassword(password); err != nil {
		return nil, "", err
	}
	hash, err := HashPassword(password)
	if err != nil {
		return nil, "", err
	}
	rec := &record{Username: u.GetUsername(), DisplayName: u.GetDisplayName(), Roles: roles, Disabled: u.GetDisabled(),
		CreatedAt: s.now().UnixMilli(), Hash: hash}
	if rec.DisplayName == "" {
		rec.DisplayName = rec.Username
	}
	for _, fp := range u.GetCertificateSha256() {
		fp, err := NormaliseFingerprint(fp)
		if err != nil {
			return nil, "", err
		}
		if !slices.Contains(rec.Certs, fp) {
			rec.Certs = append(rec.Certs, fp)
		}
	}
	err = s.db.Update(func(txn *badger.Txn) error {
		if _, err := txn.Get([]byte(pUser + rec.Username)); err == nil {
			return fmt.Errorf("%w: %s", ErrExists, rec.Username)
		} else if !errors.Is(err, badger.ErrKeyNotFound) {
			return err
		}
		return s.put(txn, nil, rec)
	})
	if err != nil {
		return nil, "", err
	}
	return rec.user(), generated, nil
}

// put writes rec (old: its previous version, nil if new), keeping the
// certificate index in step.
func (s *Store) put(txn *badger.Txn, old, rec *record) error {
	for _, fp := range rec.Certs {
		it, err := txn.Get([]byte(pCert + fp))
		switch {
		case errors.Is(err, badger.ErrKeyNotFound):
		case err != nil:
			return err
		default:
			owner, err := it.ValueCopy(nil)
			if err != nil {
				return err
			}
			if string(owner) != rec.Username {
				return fmt.Errorf("%w: certificate %s belongs to %s", ErrExists, fp, owner)
			}
		}
		if err := txn.Set([]byte(pCert+fp), []byte(rec.Username)); err != nil {
			return err
		}
	}
	if old != nil {
		for _, fp := range old.Certs {
			if !slices.Contains(rec.Certs, fp) {
				if err := txn.Delete([]byte(pCert + fp)); err != nil {
					return err
				}
			}
		}
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	return txn.Set([]byte(pUser+rec.Username), b)
}

func getRecord(txn *badger.Txn, username string) (*record, error) {
	it, err := txn.Get([]byte(pUser + username))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, username)
	}
	if err != nil {
		return nil, err
	}
	var rec record
	if err := it.Value(func(b []byte) error { return json.Unmarshal(b, &rec) }); err != nil {
		return nil, fmt.Errorf("auth: decode user %s: %w", username, err)
	}
	return &rec, nil
}

// Get returns a user (without its hash).
func (s *Store) Get(username string) (*nodev1.User, error) {
	var rec *record
	err := s.db.View(func(txn *badger.Txn) (err error) {
		rec, err = getRecord(txn, username)
		return err
	})
	if err != nil {
		return nil, err
	}
	return rec.user(), nil
}

// List returns every user, ordered by username.
func (s *Store) List() ([]*nodev1.User, error) {
	var out []*nodev1.User
	err := s.db.View(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = []byte(pUser)
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			var rec record
			if err := it.Item().Value(func(b []byte) error { return json.Unmarshal(b, &rec) }); err != nil {
				return err
			}
			out = append(out, rec.user())
		}
		return nil
	})
	return out, err
}

// Empty reports whether the store has no users.
func (s *Store) Empty() (bool, error) {
	users, err := s.List()
	return len(users) == 0, err
}

// Update changes what req sets (roles, disabled, display name,
// certificates) and returns the user.
func (s *Store) Update(req *nodev1.UpdateUserRequest) (*nodev1.User, error) {
	var out *record
	err := s.db.Update(func(txn *badger.Txn) error {
		old, err := getRecord(txn, req.GetUsername())
		if err != nil {
			return err
		}
		rec := *old
		rec.Certs = slices.Clone(old.Certs)
		if req.GetSetRoles() {
			if rec.Roles, err = checkRoles(req.GetRoles()); err != nil {
				return err
			}
		}
		if req.GetSetDisabled() {
			rec.Disabled = req.GetDisabled()
		}
		if d := req.GetDisplayName(); d != "" {
			if err := checkDisplayName(d); err != nil {
				return err
			}
			rec.DisplayName = d
		}
		for _, fp := range req.GetRemoveCertificateSha256() {
			fp, err := NormaliseFingerprint(fp)
			if err != nil {
				return err
			}
			rec.Certs = slices.DeleteFunc(rec.Certs, func(c string) bool { return c == fp })
		}
		for _, fp := range req.GetAddCertificateSha256() {
			fp, err := NormaliseFingerprint(fp)
			if err != nil {
				return err
			}
			if !slices.Contains(rec.Certs, fp) {
				rec.Certs = append(rec.Certs, fp)
			}
		}
		out = &rec
		return s.put(txn, old, &rec)
	})
	if err != nil {
		return nil, err
	}
	return out.user(), nil
}

// SetPassword sets a user's password; empty generates one, which is
// returned.
func (s *Store) SetPassword(username, password string) (string, error) {
	generated := ""
	if password == "" {
		var err error
		if generated, err = GeneratePassword(); err != nil {
			return "", err
		}
		password = generated
	}
	if err := checkPassword(password); err != nil {
		return "", err
	}
	hash, err := HashPassword(password)
	if err != nil {
		return "", err
	}
	err = s.db.Update(func(txn *badger.Txn) error {
		rec, err := getRecord(txn, username)
		if err != nil {
			return err
		}
		rec.Hash = hash
		return s.put(txn, rec, rec)
	})
	return generated, err
}

// Authenticate checks a username and password. Every failure (unknown
// user, wrong password, disabled user) takes one argon2id computation and
// returns ErrBadCredential or ErrDisabled; the caller should not tell the
// person which.
func (s *Store) Authenticate(username, password string) (*nodev1.User, error) {
	var rec *record
	err := s.db.View(func(txn *badger.Txn) (err error) {
		rec, err = getRecord(txn, username)
		return err
	})
	if errors.Is(err, ErrNotFound) {
		_, _ = CheckPassword(dummyHash(), password)
		return nil, ErrBadCredential
	}
	if err != nil {
		return nil, err
	}
	ok, err := CheckPassword(rec.Hash, password)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, ErrBadCredential
	}
	if rec.Disabled {
		return nil, fmt.Errorf("%w: %s", ErrDisabled, username)
	}
	return rec.user(), nil
}

// ByCertificate returns the user a client certificate fingerprint (hex
// SHA-256 of the DER) belongs to.
func (s *Store) ByCertificate(fp string) (*nodev1.User, error) {
	var rec *record
	err := s.db.View(func(txn *badger.Txn) error {
		it, err := txn.Get([]byte(pCert + fp))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return fmt.Errorf("%w: no user has certificate %s", ErrNotFound, fp)
		}
		if err != nil {
			return err
		}
		owner, err := it.ValueCopy(nil)
		if err != nil {
			return err
		}
		rec, err = getRecord(txn, string(owner))
		return err
	})
	if err != nil {
		return nil, err
	}
	return rec.user(), nil
}

// InitialAdminFile is the name, under the data dir, of the file holding the
// first admin's generated password.
const InitialAdminFile = "initial-admin-password"

// EnsureInitialAdmin creates the user "admin" (role ADMIN) with a random
// password written to dataDir/initial-admin-password (mode 0600) if the
// store has no user at all. It returns the file's path when it created
// one, "" otherwise.
func EnsureInitialAdmin(s *Store, dataDir string) (string, error) {
	empty, err := s.Empty()
	if err != nil || !empty {
		return "", err
	}
	path := filepath.Join(dataDir, InitialAdminFile)
	pw, err := GeneratePassword()
	if err != nil {
		return "", err
	}
	// The file first: a user whose password nobody knows helps no one.
	if err := os.WriteFile(path, []byte(pw+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("auth: write %s: %w", path, err)
	}
	if _, _, err := s.Create(&nodev1.User{Username: "admin", DisplayName: "Administrator", Roles: []nodev1.Role{nodev1.Role_ROLE_ADMIN}}, pw); err != nil {
		_ = os.Remove(path)
		return "", err
	}
	return path, nil
}

// HasRole reports whether u holds role r.
func HasRole(u *nodev1.User, r nodev1.Role) bool { return slices.Contains(u.GetRoles(), r) }
