package main

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/praas-dev/praas/client"
	"github.com/praas-dev/praas/internal/tlsca"
)

// EnvEndpoint names the control plane the client commands talk to.
const EnvEndpoint = "PRAAS_ENDPOINT"

// cli carries what every command needs; tests run it in-process.
type cli struct {
	ctx    context.Context
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	// isTerminal tells whether a writer is a terminal (tests replace it).
	isTerminal func(w io.Writer) bool
	json       bool
	// ca is the file of the CA certificate(s) an https:// control plane's
	// certificate is checked against (--ca, $PRAAS_CA); caPool holds them.
	ca     string
	caPool *x509.CertPool
}

// EnvCA names a PEM file of the CA that signed the control plane's
// certificate, which the client commands trust (--ca).
const EnvCA = "PRAAS_CA"

func (c *cli) client() *client.Client {
	opts := []client.Option{client.WithToken(token())}
	if c.caPool != nil {
		opts = append(opts, client.WithRootCAs(c.caPool))
	}
	return client.New(endpoint(), opts...)
}

// loadCA reads --ca, if set.
func (c *cli) loadCA() error {
	if c.ca == "" {
		return nil
	}
	b, err := os.ReadFile(c.ca)
	if err != nil {
		return fmt.Errorf("--ca: %w", err)
	}
	if c.caPool, err = tlsca.Pool(b); err != nil {
		return fmt.Errorf("--ca %s: %w", c.ca, err)
	}
	return nil
}

// run executes the command line args and returns the exit code.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	c := &cli{ctx: ctx, stdin: stdin, stdout: stdout, stderr: stderr, isTerminal: isTerminal}
	return c.run(args)
}

// isTerminal reports whether w is a terminal (a character device).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// run executes the command line args with c's streams and returns the exit code.
func (c *cli) run(args []string) int {
	root := &cobra.Command{
		Use:   "praas",
		Short: "Process-as-a-Service: serverless cloud processes",
		Long: `praas runs serverless cloud processes: stateful workers that keep their state
in memory, take invocations over a direct data plane, talk to each other
through mailboxes, and are swapped to storage when idle.

The client commands talk to the control plane at $PRAAS_ENDPOINT
(default ` + client.DefaultEndpoint + `) with the API key in $PRAAS_TOKEN, or
else the one the config file keeps for that endpoint (see praas login). An
https:// endpoint's certificate is checked against $PRAAS_CA (--ca) if set.

Read commands print the API's JSON with --json. An error is one line on
stderr, and the exit code tells its kind: 2 usage, 3 not found, 4 conflict,
5 invalid input, 6 API key refused, 7 retryable (nothing ran), 8 the
function failed, 9 outcome unknown (it may have run), 130 interrupted, 1
anything else. praas completion bash|zsh|fish|powershell prints a shell
completion script.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().BoolVar(&c.json, "json", false, "print the API's JSON instead of tables and text")
	root.PersistentFlags().StringVar(&c.ca, "ca", os.Getenv(EnvCA), "PEM file of the CA that signed an https:// control plane's certificate, trusted instead of the system's (default $"+EnvCA+")")
	root.PersistentPreRunE = func(*cobra.Command, []string) error { return c.loadCA() }
	root.AddCommand(c.upCmd(), c.appCmd(), c.processCmd(), c.invokeCmd(), c.logsCmd(), c.sendCmd(), c.keyCmd(), c.usageCmd(), c.loginCmd(), c.statusCmd(), withPython(c.runProcessCmd()))
	root.SetArgs(args)
	root.SetIn(c.stdin)
	root.SetOut(c.stdout)
	root.SetErr(c.stderr)
	root.InitDefaultHelpCmd()
	root.InitDefaultCompletionCmd(args...)
	strictUsage(root)
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error { return &usageError{err: err, cmd: cmd.CommandPath()} })
	err := root.ExecuteContext(c.ctx)
	if err != nil {
		var usage *usageError
		if errors.As(err, &usage) {
			fmt.Fprintf(c.stderr, "praas: %s (see %s --help)\n", oneLine(err), usage.cmd)
		} else if errors.Is(err, syscall.ECONNREFUSED) {
			fmt.Fprintf(c.stderr, "praas: no control plane at %s: connection refused (is praas up running? $%s names another)\n", endpoint(), EnvEndpoint)
		} else {
			fmt.Fprintln(c.stderr, "praas:", oneLine(err))
		}
	}
	return exitCode(c.ctx, err)
}

// usageError is a command line that does not say what to do: bad flags or
// arguments, an unknown command. It exits with exitUsage.
type usageError struct {
	err error
	cmd string // the command whose --help explains it
}

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

// usagef returns a usageError of cmd.
func usagef(cmd *cobra.Command, format string, args ...any) error {
	return &usageError{err: fmt.Errorf(format, args...), cmd: cmd.CommandPath()}
}

// strictUsage makes the argument errors of cmd and its subcommands usage
// errors, and a group of commands (app, process, ...) refuse an unknown
// subcommand instead of printing its help and succeeding.
func strictUsage(cmd *cobra.Command) {
	for _, sub := range cmd.Commands() {
		strictUsage(sub)
	}
	if cmd.HasSubCommands() && cmd.Run == nil && cmd.RunE == nil {
		cmd.Args = cobra.ArbitraryArgs
		cmd.RunE = func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return cmd.Help()
			}
			msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
			if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
				msg += ": did you mean " + strings.Join(s, " or ") + "?"
			}
			return usagef(cmd, "%s", msg)
		}
		return
	}
	if check := cmd.Args; check != nil {
		cmd.Args = func(cmd *cobra.Command, args []string) error {
			if err := check(cmd, args); err != nil {
				return &usageError{err: err, cmd: cmd.CommandPath()}
			}
			return nil
		}
	}
}

// oneLine keeps error output to the single line the CLI promises.
func oneLine(err error) string {
	var api *client.APIError
	if errors.As(err, &api) {
		// The control plane's message whole (a function's error may take
		// lines), after what the command said about it, if anything.
		if prefix, ok := strings.CutSuffix(err.Error(), api.Message); ok && !strings.Contains(prefix, "\n") {
			return prefix + api.Message
		}
		return api.Message
	}
	s := err.Error()
	for i := 0; i < len(s); i++ {
		if s[i] == '\n' {
			return s[:i]
		}
	}
	return s
}
