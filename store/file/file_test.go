package file_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/praas-dev/praas/store"
	"github.com/praas-dev/praas/store/file"
	"github.com/praas-dev/praas/store/storetest"
)

func open(t *testing.T, dir string) *file.Store {
	t.Helper()
	s, err := file.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestConformance(t *testing.T) {
	storetest.RunSwap(t,
		func(t *testing.T) store.Swap { return open(t, filepath.Join(t.TempDir(), "swap")) },
		storetest.ReopenSwap(func(t *testing.T, closed store.Swap) store.Swap {
			return open(t, closed.(*file.Store).Dir())
		}),
	)
}

func TestLayout(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	ctx := t.Context()
	if err := s.Put(ctx, "web/p1/3", bytes.NewReader([]byte("snap")), 4); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(dir, "web", "p1", "3"))
	if err != nil || string(data) != "snap" {
		t.Errorf("file of key web/p1/3: %q, %v", data, err)
	}
	// No temporary files are left behind, even by a failed Put.
	if err := s.Put(ctx, "web/p1/4", bytes.NewReader([]byte("short")), 99); err == nil {
		t.Error("Put with the wrong size succeeded")
	}
	entries, err := os.ReadDir(filepath.Join(dir, "web", "p1"))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Errorf("web/p1 holds %d entries, want only the key 3: %v", len(entries), entries)
	}
	// Get returns the file itself.
	rc, err := s.Get(ctx, "web/p1/3")
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if _, ok := rc.(*os.File); !ok {
		t.Errorf("Get returned %T, want *os.File", rc)
	}
}
