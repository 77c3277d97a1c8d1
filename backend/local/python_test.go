package local_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/praas-dev/praas/backend/local"
	"github.com/praas-dev/praas/errs"
)

func TestCheckPythonImage(t *testing.T) {
	dir := t.TempDir()
	mod := filepath.Join(dir, "handlers.py")
	if err := os.WriteFile(mod, []byte("import praas\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	b := newBackend(t, local.Config{RunDir: t.TempDir(), Isolation: local.IsolationNone})
	got, err := b.CheckImage(context.Background(), "python:"+dir+"/./handlers.py")
	if err != nil || got != "python:"+mod {
		t.Fatalf("CheckImage of a module = %q, %v; want %q", got, err, "python:"+mod)
	}
	for _, bad := range []string{"python:handlers.py", "python:3.12", "python:" + dir, "python:" + filepath.Join(dir, "absent.py"), "python:"} {
		if _, err := b.CheckImage(context.Background(), bad); errs.CodeOf(err) != errs.InvalidArgument || !strings.Contains(err.Error(), "python:") {
			t.Errorf("CheckImage(%q) = %v, want invalid argument naming it", bad, err)
		}
	}
}
