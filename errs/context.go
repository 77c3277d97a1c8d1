package errs

import "context"

var errContextDeadline = context.DeadlineExceeded
