// Package pysdk embeds the Python SDK (the praas package beside this file)
// into the praas binary, so a process of a Python image finds it without
// an installation.
package pysdk

import (
	"embed"
	"io/fs"
	"os"
	"path/filepath"
)

//go:embed praas/*.py praas/py.typed
var files embed.FS

// Extract writes the praas package into a new private directory under dir
// (os.TempDir() if empty) and returns that directory, to be put on
// PYTHONPATH; the caller removes it.
func Extract(dir string) (string, error) {
	root, err := os.MkdirTemp(dir, "praas-python-")
	if err != nil {
		return "", err
	}
	err = fs.WalkDir(files, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		target := filepath.Join(root, filepath.FromSlash(path))
		if d.IsDir() {
			return os.MkdirAll(target, 0o700)
		}
		b, err := files.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(target, b, 0o600)
	})
	if err != nil {
		os.RemoveAll(root)
		return "", err
	}
	return root, nil
}
