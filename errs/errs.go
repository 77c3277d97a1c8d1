// Package errs holds the few portable error codes that praas maps, in one
// place each, to HTTP statuses, data-plane error frames and CLI messages.
//
// Code that fails for one of these reasons wraps the sentinel with %w, so
// callers test with errors.Is and the mapping layers with CodeOf.
package errs

import (
	"errors"
	"fmt"
)

// Code is a portable error category.
type Code uint16

// The codes. Their numeric values travel in data-plane error frames, so they
// must never be renumbered.
const (
	Unknown            Code = 0
	NotFound           Code = 1 // app, process, function, state key or snapshot absent
	AlreadyExists      Code = 2 // duplicate app or pid
	InvalidArgument    Code = 3 // malformed input
	FailedPrecondition Code = 4 // the target is in the wrong state (e.g. not active)
	ResourceExhausted  Code = 5 // too large, too many
	Unavailable        Code = 6 // try again later (swapping, shutting down)
	Unauthenticated    Code = 7 // missing or wrong token
	PermissionDenied   Code = 8 // e.g. sending to another application
	DeadlineExceeded   Code = 9 // timeouts (Recv, invoke deadlines)
	Internal           Code = 10
	FunctionFailed     Code = 11 // the user function returned an error or panicked
	// OutcomeUnknown: the call was sent, but its answer never came (the
	// connection broke, the process died): it may or may not have run, so
	// nothing retries it on its own. Unavailable, by contrast, says the call
	// was refused or never sent, so it did not run and is safe to retry.
	OutcomeUnknown Code = 12
)

// Sentinels, one per code, to wrap with %w.
var (
	ErrNotFound           = &codeError{NotFound, "not found"}
	ErrAlreadyExists      = &codeError{AlreadyExists, "already exists"}
	ErrInvalidArgument    = &codeError{InvalidArgument, "invalid argument"}
	ErrFailedPrecondition = &codeError{FailedPrecondition, "failed precondition"}
	ErrResourceExhausted  = &codeError{ResourceExhausted, "resource exhausted"}
	ErrUnavailable        = &codeError{Unavailable, "unavailable"}
	ErrUnauthenticated    = &codeError{Unauthenticated, "unauthenticated"}
	ErrPermissionDenied   = &codeError{PermissionDenied, "permission denied"}
	ErrDeadlineExceeded   = &codeError{DeadlineExceeded, "deadline exceeded"}
	ErrInternal           = &codeError{Internal, "internal error"}
	ErrFunctionFailed     = &codeError{FunctionFailed, "function failed"}
	ErrOutcomeUnknown     = &codeError{OutcomeUnknown, "outcome unknown"}
)

// ErrTooLarge marks a ResourceExhausted error about one payload over its
// size limit (HTTP 413), as opposed to a quota (HTTP 429): wrap it instead
// of ErrResourceExhausted. Its code is ResourceExhausted.
var ErrTooLarge error = &remoteError{s: ErrResourceExhausted, msg: "too large"}

var sentinels = map[Code]*codeError{
	NotFound: ErrNotFound, AlreadyExists: ErrAlreadyExists, InvalidArgument: ErrInvalidArgument,
	FailedPrecondition: ErrFailedPrecondition, ResourceExhausted: ErrResourceExhausted,
	Unavailable: ErrUnavailable, Unauthenticated: ErrUnauthenticated,
	PermissionDenied: ErrPermissionDenied, DeadlineExceeded: ErrDeadlineExceeded,
	Internal: ErrInternal, FunctionFailed: ErrFunctionFailed, OutcomeUnknown: ErrOutcomeUnknown,
}

type codeError struct {
	code Code
	msg  string
}

func (e *codeError) Error() string { return e.msg }

// CodeOf returns the code of the first sentinel found in err's chain, or Unknown.
func CodeOf(err error) Code {
	if err == nil {
		return Unknown
	}
	var ce *codeError
	if errors.As(err, &ce) {
		return ce.code
	}
	if errors.Is(err, errContextDeadline) {
		return DeadlineExceeded
	}
	return Unknown
}

// New returns an error with the given code and message: its Error() is msg
// alone, and errors.Is(err, sentinel-of-code) holds. It rebuilds errors that
// crossed a wire.
func New(code Code, msg string) error {
	s, ok := sentinels[code]
	if !ok {
		return errors.New(msg)
	}
	return &remoteError{s: s, msg: msg}
}

// Errorf formats a message and wraps the sentinel of code.
func Errorf(code Code, format string, args ...any) error {
	return New(code, fmt.Sprintf(format, args...))
}

type remoteError struct {
	s   *codeError
	msg string
}

func (e *remoteError) Error() string { return e.msg }
func (e *remoteError) Unwrap() error { return e.s }

var codeNames = map[Code]string{
	Unknown: "unknown", NotFound: "not_found", AlreadyExists: "already_exists",
	InvalidArgument: "invalid_argument", FailedPrecondition: "failed_precondition",
	ResourceExhausted: "resource_exhausted", Unavailable: "unavailable",
	Unauthenticated: "unauthenticated", PermissionDenied: "permission_denied",
	DeadlineExceeded: "deadline_exceeded", Internal: "internal", FunctionFailed: "function_failed",
	OutcomeUnknown: "outcome_unknown",
}

// String is the code's name as the REST API spells it ("not_found").
func (c Code) String() string {
	if n, ok := codeNames[c]; ok {
		return n
	}
	return "unknown"
}

// ParseCode returns the code named s, or Unknown.
func ParseCode(s string) Code {
	for c, n := range codeNames {
		if n == s {
			return c
		}
	}
	return Unknown
}
