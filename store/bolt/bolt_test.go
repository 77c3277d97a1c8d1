package bolt_test

import (
	"path/filepath"
	"testing"

	"github.com/praas-dev/praas/store"
	"github.com/praas-dev/praas/store/bolt"
	"github.com/praas-dev/praas/store/storetest"
)

func open(t *testing.T, path string) *bolt.Store {
	t.Helper()
	s, err := bolt.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestConformance(t *testing.T) {
	storetest.RunMetadata(t,
		func(t *testing.T) store.Metadata {
			return open(t, filepath.Join(t.TempDir(), "sub", "meta.db"))
		},
		storetest.ReopenMetadata(func(t *testing.T, closed store.Metadata) store.Metadata {
			return open(t, closed.(*bolt.Store).Path())
		}),
	)
}
