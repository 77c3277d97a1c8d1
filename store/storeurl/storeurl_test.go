package storeurl_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/praas-dev/praas/errs"
	"github.com/praas-dev/praas/internal/testenv"
	"github.com/praas-dev/praas/store"
	"github.com/praas-dev/praas/store/bolt"
	"github.com/praas-dev/praas/store/file"
	"github.com/praas-dev/praas/store/memory"
	"github.com/praas-dev/praas/store/redis"
	"github.com/praas-dev/praas/store/s3"
	"github.com/praas-dev/praas/store/storeurl"
)

func TestOpenMetadata(t *testing.T) {
	data := t.TempDir()
	abs := filepath.Join(t.TempDir(), "other.db")
	for _, tt := range []struct{ url, wantPath string }{
		{"", filepath.Join(data, "meta.db")},
		{"bolt://", filepath.Join(data, "meta.db")},
		{"bolt://" + abs, abs},
	} {
		m, err := storeurl.OpenMetadata(t.Context(), tt.url, data)
		if err != nil {
			t.Errorf("OpenMetadata(%q): %v", tt.url, err)
			continue
		}
		if b, ok := m.(*bolt.Store); !ok || b.Path() != tt.wantPath {
			t.Errorf("OpenMetadata(%q) = %T, want *bolt.Store at %s", tt.url, m, tt.wantPath)
		}
		if _, err := os.Stat(tt.wantPath); err != nil {
			t.Errorf("OpenMetadata(%q) created no file: %v", tt.url, err)
		}
		m.Close()
	}
}

func TestOpenMemory(t *testing.T) {
	var opened []store.Metadata
	for _, u := range []string{"mem://", "memory://"} {
		m, err := storeurl.OpenMetadata(t.Context(), u, "") // needs no data directory
		if err != nil {
			t.Fatalf("OpenMetadata(%q): %v", u, err)
		}
		defer m.Close()
		if _, ok := m.(*memory.Store); !ok {
			t.Fatalf("OpenMetadata(%q) = %T, want *memory.Store", u, m)
		}
		opened = append(opened, m)
	}
	// Each URL opens a store of its own.
	if err := opened[0].CreateApp(t.Context(), store.App{Name: "web"}); err != nil {
		t.Fatal(err)
	}
	if apps, err := opened[1].ListApps(t.Context()); err != nil || len(apps) != 0 {
		t.Errorf("second in-memory store: ListApps = %v, %v; want none", apps, err)
	}
}

func TestOpenSwap(t *testing.T) {
	data := t.TempDir()
	abs := filepath.Join(t.TempDir(), "snaps")
	for _, tt := range []struct{ url, wantDir string }{
		{"", filepath.Join(data, "swap")},
		{"file://", filepath.Join(data, "swap")},
		{"file://" + abs, abs},
	} {
		sw, err := storeurl.OpenSwap(t.Context(), tt.url, data)
		if err != nil {
			t.Errorf("OpenSwap(%q): %v", tt.url, err)
			continue
		}
		if f, ok := sw.(*file.Store); !ok || f.Dir() != tt.wantDir {
			t.Errorf("OpenSwap(%q) = %T, want *file.Store at %s", tt.url, sw, tt.wantDir)
		}
		sw.Close()
	}
}

func TestInvalid(t *testing.T) {
	data := t.TempDir()
	for _, u := range []string{"mysql://x", "bolt://host/meta.db", "bolt:relative.db", "bolt://?x=1", "s3://bucket", "%zz",
		"mem://host", "mem:///path", "mem://?x=1", "memory:opaque"} {
		if _, err := storeurl.OpenMetadata(t.Context(), u, data); !errors.Is(err, errs.ErrInvalidArgument) {
			t.Errorf("OpenMetadata(%q) = %v, want an invalid-argument error", u, err)
		}
	}
	for _, u := range []string{"gs://bucket", "file://host/dir", "file:rel", "redis://localhost", "mem://", "%zz"} {
		if _, err := storeurl.OpenSwap(t.Context(), u, data); !errors.Is(err, errs.ErrInvalidArgument) {
			t.Errorf("OpenSwap(%q) = %v, want an invalid-argument error", u, err)
		}
	}
	if _, err := storeurl.OpenMetadata(t.Context(), "", ""); !errors.Is(err, errs.ErrInvalidArgument) {
		t.Errorf("OpenMetadata without a data directory = %v, want an invalid-argument error", err)
	}
}

// TestServers checks that redis:// and s3:// URLs reach their drivers.
func TestServers(t *testing.T) {
	t.Run("redis", func(t *testing.T) {
		u := testenv.Redis(t)
		m, err := storeurl.OpenMetadata(t.Context(), u, "")
		if err != nil {
			t.Fatalf("OpenMetadata(%q): %v", u, err)
		}
		defer m.Close()
		if _, ok := m.(*redis.Store); !ok {
			t.Errorf("OpenMetadata(%q) = %T, want *redis.Store", u, m)
		}
	})
	t.Run("s3", func(t *testing.T) {
		u := testenv.S3(t)
		sw, err := storeurl.OpenSwap(t.Context(), u, "")
		if err != nil {
			t.Fatalf("OpenSwap: %v", err)
		}
		defer sw.Close()
		if _, ok := sw.(*s3.Store); !ok {
			t.Errorf("OpenSwap = %T, want *s3.Store", sw)
		}
	})
}
