package errs

import (
	"errors"
	"net/http"
)

// HTTPStatusOf is the status the REST API answers err with: HTTPStatus of
// its code, except that a ResourceExhausted error is 413 only for one
// payload over its size limit (ErrTooLarge) and 429 for a quota (too many
// messages waiting, processes, invocations), which comes with Retry-After.
func HTTPStatusOf(err error) int {
	c := CodeOf(err)
	if c == ResourceExhausted && !errors.Is(err, ErrTooLarge) {
		return http.StatusTooManyRequests
	}
	return HTTPStatus(c)
}

// RetryAfter is the Retry-After (seconds) of a 429: quotas free up as
// processes read their mailboxes and finish invocations.
const RetryAfter = "1"

// HTTPStatus maps a code to the status the REST API answers with.
// ResourceExhausted maps to 413; see HTTPStatusOf for quotas.
func HTTPStatus(c Code) int {
	switch c {
	case NotFound:
		return http.StatusNotFound
	case AlreadyExists:
		return http.StatusConflict
	case InvalidArgument:
		return http.StatusBadRequest
	case FailedPrecondition:
		return http.StatusConflict
	case ResourceExhausted:
		return http.StatusRequestEntityTooLarge
	case Unavailable:
		return http.StatusServiceUnavailable
	case Unauthenticated:
		return http.StatusUnauthorized
	case PermissionDenied:
		return http.StatusForbidden
	case DeadlineExceeded:
		return http.StatusGatewayTimeout
	case FunctionFailed:
		return http.StatusUnprocessableEntity
	case OutcomeUnknown:
		// The control plane, a gateway to the process, got no answer from it.
		return http.StatusBadGateway
	default:
		return http.StatusInternalServerError
	}
}

// FromHTTPStatus maps a REST status back to a code, for clients.
func FromHTTPStatus(status int) Code {
	switch status {
	case http.StatusNotFound:
		return NotFound
	case http.StatusConflict:
		return AlreadyExists
	case http.StatusBadRequest:
		return InvalidArgument
	case http.StatusRequestEntityTooLarge, http.StatusTooManyRequests:
		return ResourceExhausted
	case http.StatusServiceUnavailable:
		return Unavailable
	case http.StatusUnauthorized:
		return Unauthenticated
	case http.StatusForbidden:
		return PermissionDenied
	case http.StatusGatewayTimeout:
		return DeadlineExceeded
	case http.StatusUnprocessableEntity:
		return FunctionFailed
	case http.StatusBadGateway:
		return OutcomeUnknown
	default:
		return Internal
	}
}
