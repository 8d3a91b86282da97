package faultfs

import (
	"errors"
	"math/rand/v2"
	"os"
	"testing"
)

func write(t *testing.T, fs *FS, name string, b []byte, sync bool) {
	t.Helper()
	f, err := fs.OpenFile(name, os.O_RDWR|os.O_CREATE)
	if err != nil {
		t.Fatal(err)
	}
	size, _ := f.Size()
	if _, err := f.WriteAt(b, size); err != nil {
		t.Fatal(err)
	}
	if sync {
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
}

// TestPowerCut pins the model: unsynced data and unsynced directory
// entries are gone after a restart; synced ones stay; old handles die.
func TestPowerCut(t *testing.T) {
	fs := New()
	fs.MkdirAll("/d")
	write(t, fs, "/d/a", []byte("synced"), true)
	fs.SyncDir("/d")
	write(t, fs, "/d/a", []byte("+lost"), false)
	write(t, fs, "/d/b", []byte("file synced, dir not"), true)
	f, _ := fs.OpenFile("/d/a", os.O_RDWR)
	if err := fs.Remove("/d/a"); err != nil {
		t.Fatal(err)
	}
	fs.Restart(rand.New(rand.NewPCG(1, 1)), TearNone)
	if b, err := fs.ReadFile("/d/a"); err != nil || string(b) != "synced" {
		t.Fatalf("a = %q %v", b, err)
	}
	if _, err := fs.ReadFile("/d/b"); err == nil {
		t.Fatal("b survived without a directory sync")
	}
	if _, err := f.ReadAt(make([]byte, 1), 0); !errors.Is(err, ErrCrashed) {
		t.Fatalf("old handle: %v", err)
	}
}

// TestTearPrefix: a torn restart keeps a prefix of the unsynced write.
func TestTearPrefix(t *testing.T) {
	seen := map[int]bool{}
	for seed := range uint64(50) {
		fs := New()
		fs.MkdirAll("/d")
		write(t, fs, "/d/a", []byte("0123"), true)
		fs.SyncDir("/d")
		write(t, fs, "/d/a", []byte("456789"), false)
		fs.Restart(rand.New(rand.NewPCG(seed, 2)), TearPrefix)
		b, _ := fs.ReadFile("/d/a")
		if string(b) != "0123456789"[:len(b)] || len(b) < 4 {
			t.Fatalf("torn content %q", b)
		}
		seen[len(b)] = true
	}
	if len(seen) < 4 {
		t.Fatalf("tears not spread: %v", seen)
	}
}

// TestCrashAt: the armed call does not happen and everything after fails.
func TestCrashAt(t *testing.T) {
	fs := New()
	fs.MkdirAll("/d")
	f, _ := fs.OpenFile("/d/a", os.O_RDWR|os.O_CREATE)
	fs.CrashAt(2)
	if _, err := f.WriteAt([]byte("x"), 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); !errors.Is(err, ErrCrashed) {
		t.Fatalf("armed sync: %v", err)
	}
	if _, err := f.WriteAt([]byte("y"), 1); !errors.Is(err, ErrCrashed) || !fs.Crashed() {
		t.Fatalf("after crash: %v", err)
	}
	fs.Restart(rand.New(rand.NewPCG(1, 1)), TearNone)
	if _, err := fs.ReadFile("/d/a"); err == nil {
		t.Fatal("file never made durable survived")
	}
}
