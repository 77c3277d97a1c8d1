package local

import (
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/praas-dev/praas/errs"
)

// PythonPrefix starts an image declaration of Python functions:
// "python:/abs/path/handlers.py". Such a process runs the praas binary
// (Executable, BuiltinArgs) with --python and the module's path; the
// runtime starts Python workers for it (process/workers).
const PythonPrefix = "python:"

// pythonModule returns the module path of a Python image, or "" for
// another image.
func pythonModule(image string) string {
	m, ok := strings.CutPrefix(image, PythonPrefix)
	if !ok {
		return ""
	}
	return m
}

// checkPython validates "python:PATH": an absolute path of a readable
// regular file. It returns the canonical form.
func checkPython(image string) (string, error) {
	m := pythonModule(image)
	if !filepath.IsAbs(m) {
		return "", fmt.Errorf("%w: image %q: give python:/absolute/path/module.py", errs.ErrInvalidArgument, image)
	}
	m = filepath.Clean(m)
	f, err := os.Open(m)
	if err != nil {
		return "", fmt.Errorf("%w: image %q: %v", errs.ErrInvalidArgument, image, err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return "", fmt.Errorf("%w: image %q is not a regular file", errs.ErrInvalidArgument, image)
	}
	return PythonPrefix + m, nil
}

// sandboxModuleDir is where a Python image's module appears inside a
// namespaces sandbox.
const sandboxModuleDir = "/app/python"

// pythonArgs are the runtime's arguments for module at path.
func pythonArgs(builtinArgs []string, module string) []string {
	return append(append([]string(nil), builtinArgs...), "--python", module)
}

// sandboxModule copies a Python image's module for a sandbox (as image
// binaries are: content-addressed, root's, read-only) and returns the
// copy's path on the host and the path the runtime is to be given.
func (b *Backend) sandboxModule(module string, namespaces bool) (host, inside string, err error) {
	host, err = b.image(module)
	if err != nil {
		return "", "", fmt.Errorf("python module: %w", err)
	}
	if !namespaces {
		return host, host, nil
	}
	return host, path.Join(sandboxModuleDir, filepath.Base(host)), nil
}
