package controlplane

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"

	"github.com/praas-dev/praas/errs"
)

// maxJSONBody bounds request bodies of the JSON routes.
const maxJSONBody = 1 << 20

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// writeError maps err to a status with errs.HTTPStatus and answers
// {"error": message, "code": name}.
func writeError(w http.ResponseWriter, log *slog.Logger, err error) {
	code := errs.CodeOf(err)
	status := errs.HTTPStatusOf(err)
	if status == http.StatusTooManyRequests {
		w.Header().Set("Retry-After", errs.RetryAfter)
	}
	if status >= 500 && code != errs.Unavailable && !errors.Is(err, context.Canceled) {
		log.Error("request failed", "err", err)
	}
	writeJSON(w, status, map[string]string{"error": err.Error(), "code": code.String()})
}

// readJSON decodes the body into v; an empty body leaves v as it is when
// allowEmpty is set.
func readJSON(r *http.Request, v any, allowEmpty bool) error {
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, maxJSONBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) && allowEmpty {
			return nil
		}
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return fmt.Errorf("%w: request body over %d bytes", errs.ErrTooLarge, maxJSONBody)
		}
		return fmt.Errorf("%w: bad JSON: %v", errs.ErrInvalidArgument, err)
	}
	if dec.More() {
		return fmt.Errorf("%w: bad JSON: trailing data", errs.ErrInvalidArgument)
	}
	return nil
}
