package storeformat

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestNewStoreGetsCurrentMarker(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	s := Store{Kind: "registry-state", Current: 3}
	from, err := s.Prepare(dir, nil)
	if err != nil || from != 0 {
		t.Fatalf("Prepare new: %d, %v", from, err)
	}
	if v, ok, err := Read(dir, s.Kind); err != nil || !ok || v != 3 {
		t.Fatalf("marker: %d %v %v", v, ok, err)
	}
	// Opening again changes nothing.
	if from, err := s.Prepare(dir, nil); err != nil || from != 3 {
		t.Fatalf("Prepare again: %d, %v", from, err)
	}
}

func TestNewerFormatRefused(t *testing.T) {
	dir := t.TempDir()
	if err := Write(dir, "users", 2); err != nil {
		t.Fatal(err)
	}
	_, err := Store{Kind: "users", Current: 1}.Prepare(dir, nil)
	if !errors.Is(err, ErrTooNew) || !strings.Contains(err.Error(), "format 2") || !strings.Contains(err.Error(), "up to 1") {
		t.Fatalf("newer format: %v", err)
	}
	// The marker is left as it was: nothing was touched.
	if v, _, _ := Read(dir, "users"); v != 2 {
		t.Fatalf("marker changed to %d", v)
	}
}

func TestWrongStoreRefused(t *testing.T) {
	dir := t.TempDir()
	if err := Write(dir, "handover", 1); err != nil {
		t.Fatal(err)
	}
	if _, err := (Store{Kind: "users", Current: 1}).Prepare(dir, nil); !errors.Is(err, ErrWrongStore) {
		t.Fatalf("wrong kind: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, FileName), []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := (Store{Kind: "handover", Current: 1}).Prepare(dir, nil); !errors.Is(err, ErrWrongStore) {
		t.Fatalf("garbage marker: %v", err)
	}
}

// TestMigrationsRun: a store written before markers existed (data, no
// marker) is format 1; the registered test migrations take it to 3, one
// step at a time, each recorded; a failing step stops at the last good
// version and runs again on the next open.
func TestMigrationsRun(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "data"), []byte("v1"), 0o600); err != nil {
		t.Fatal(err)
	}
	fail := true
	var ran []string
	s := Store{Kind: "handover", Current: 3, Migrations: []Migration{
		{From: 2, Name: "rename data", Apply: func(dir string) error {
			ran = append(ran, "2->3")
			if fail {
				return errors.New("disk on fire")
			}
			if _, err := os.Stat(filepath.Join(dir, "data.v2")); err != nil {
				return nil // already renamed (idempotent)
			}
			return os.Rename(filepath.Join(dir, "data.v2"), filepath.Join(dir, "data.v3"))
		}},
		{From: 1, Name: "rewrite data", Apply: func(dir string) error {
			ran = append(ran, "1->2")
			return os.Rename(filepath.Join(dir, "data"), filepath.Join(dir, "data.v2"))
		}},
	}}
	if _, err := s.Prepare(dir, nil); err == nil || !strings.Contains(err.Error(), "disk on fire") {
		t.Fatalf("failing migration: %v", err)
	}
	if v, _, _ := Read(dir, "handover"); v != 2 {
		t.Fatalf("after a failed step the marker says %d, want 2", v)
	}
	fail = false
	from, err := s.Prepare(dir, nil)
	if err != nil || from != 2 {
		t.Fatalf("second open: %d, %v", from, err)
	}
	if v, _, _ := Read(dir, "handover"); v != 3 {
		t.Fatalf("marker %d, want 3", v)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "data.v3")); err != nil || string(b) != "v1" {
		t.Fatalf("migrated data: %q, %v", b, err)
	}
	if strings.Join(ran, ",") != "1->2,2->3,2->3" {
		t.Fatalf("migrations ran: %v", ran)
	}
	// No migration registered for a gap: refused.
	dir2 := t.TempDir()
	if err := Write(dir2, "handover", 1); err != nil {
		t.Fatal(err)
	}
	if _, err := (Store{Kind: "handover", Current: 2}).Prepare(dir2, nil); !errors.Is(err, ErrNoMigration) {
		t.Fatalf("missing migration: %v", err)
	}
}
