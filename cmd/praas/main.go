// Command praas is the one binary of praas: the control plane (`praas up`),
// the client commands, and the hidden entry that starts a process of the
// builtin image.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"os"
	"os/signal"
	"syscall"

	"github.com/praas-dev/praas/errs"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// Exit codes. A script tells what went wrong from the code alone: the
// control plane's error code (package errs) picks it, and docs/cli.md
// lists them. They are part of the CLI's interface: never renumber them.
const (
	exitOK       = 0
	exitFailure  = 1 // anything not below: a local file, an internal error
	exitUsage    = 2 // bad flags or arguments, an unknown command
	exitNotFound = 3 // not_found: no such app, process, function or key
	// exitConflict: already_exists, failed_precondition: it exists, or is in
	// the wrong state for this (a running pid, a process neither active nor
	// swapped).
	exitConflict = 4
	// exitInvalid: invalid_argument, and a payload over its size limit: the
	// control plane refused the input as it is.
	exitInvalid = 5
	exitDenied  = 6 // unauthenticated, permission_denied: the API key
	// exitRetryable: unavailable, resource_exhausted (a quota or a full
	// queue): nothing ran; the same command may succeed later.
	exitRetryable      = 7
	exitFunctionFailed = 8 // function_failed: the function returned an error or panicked
	// exitOutcomeUnknown: outcome_unknown, deadline_exceeded: the call was
	// sent but its answer never came; it may or may not have run.
	exitOutcomeUnknown = 9
	exitInterrupted    = 130 // interrupted (SIGINT, SIGTERM), as shells report it
)

// exitCode maps the error a command ended with to the process's exit code.
func exitCode(ctx context.Context, err error) int {
	var usage *usageError
	var badCert *tls.CertificateVerificationError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &usage):
		return exitUsage
	case errors.Is(err, context.Canceled) && ctx.Err() != nil:
		return exitInterrupted
	case errors.Is(err, errs.ErrTooLarge):
		return exitInvalid
	case errors.As(err, &badCert):
		// Reached, but not trusted (--ca): no retry will change that.
		return exitFailure
	}
	switch errs.CodeOf(err) {
	case errs.NotFound:
		return exitNotFound
	case errs.AlreadyExists, errs.FailedPrecondition:
		return exitConflict
	case errs.InvalidArgument:
		return exitInvalid
	case errs.Unauthenticated, errs.PermissionDenied:
		return exitDenied
	case errs.Unavailable, errs.ResourceExhausted:
		return exitRetryable
	case errs.FunctionFailed:
		return exitFunctionFailed
	case errs.OutcomeUnknown, errs.DeadlineExceeded:
		return exitOutcomeUnknown
	}
	return exitFailure
}
