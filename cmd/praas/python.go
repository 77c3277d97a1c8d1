package main

import (
	"fmt"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/praas-dev/praas/builtin"
	"github.com/praas-dev/praas/process/workers"
)

// withPython gives the run-process command --python: the process then
// runs the functions of a Python module on a pool of Python workers (see
// docs/workers.md), besides the builtin Go functions it does not shadow.
func withPython(cmd *cobra.Command) *cobra.Command {
	var py workers.Python
	f := cmd.Flags()
	f.StringVar(&py.Module, "python", "", "absolute path of a Python module whose functions (praas.function) this process runs on Python workers")
	f.StringVar(&py.Interpreter, "python-interpreter", "", "python3 for the workers (default /usr/bin/python3, else python3 in PATH)")
	f.IntVar(&py.Workers, "workers", 0, "Python workers (default GOMAXPROCS, at least 2)")
	builtinRun := cmd.RunE
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if py.Module == "" {
			return builtinRun(cmd, args)
		}
		if !filepath.IsAbs(py.Module) {
			return fmt.Errorf("--python %q: give an absolute path", py.Module)
		}
		return workers.ServePython(cmd.Context(), py, builtin.Image())
	}
	return cmd
}
