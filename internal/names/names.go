// Package names holds the rules for the names users give things in praas:
// applications, pids, functions and message keys. Every surface that takes
// one (REST, CLI, SDK, data plane) checks it here, so the rules are the same
// everywhere and docs/api.md can state them once.
package names

import (
	"fmt"
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/praas-dev/praas/errs"
)

var (
	nameRE     = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)
	functionRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)
)

// MaxKey is the longest message key, in bytes.
const MaxKey = 255

// App checks an application name: 1 to 63 letters, digits, '.', '_' or '-',
// starting with a letter or digit.
func App(s string) error { return check("app name", s, nameRE.MatchString(s), nameRule) }

// PID checks a pid, by the same rule as App.
func PID(s string) error { return check("pid", s, nameRE.MatchString(s), nameRule) }

// Function checks a function name: 1 to 128 letters, digits, '.', '_' or
// '-', starting with a letter or digit (':' separates a function from an
// invocation key in message keys).
func Function(s string) error {
	return check("function name", s, functionRE.MatchString(s), "use 1 to 128 letters, digits, '.', '_' or '-', starting with a letter or digit")
}

// ControlPrefix starts the keys of the control plane's own messages to a
// runtime (see process: controlMessage); no one else may send them.
const ControlPrefix = "praas:"

// Key checks a message key: 1 to 255 bytes of UTF-8 without whitespace or
// control characters, not starting with ControlPrefix.
func Key(s string) error {
	if strings.HasPrefix(s, ControlPrefix) {
		return fmt.Errorf("%w: message key %q: keys starting with %q are reserved", errs.ErrInvalidArgument, s, ControlPrefix)
	}
	ok := s != "" && len(s) <= MaxKey && utf8.ValidString(s)
	for _, r := range s {
		if !ok {
			break
		}
		ok = !unicode.IsSpace(r) && !unicode.IsControl(r)
	}
	return check("message key", s, ok, "use 1 to 255 bytes of UTF-8 without whitespace or control characters")
}

const nameRule = "use 1 to 63 letters, digits, '.', '_' or '-', starting with a letter or digit"

func check(kind, s string, ok bool, rule string) error {
	if ok {
		return nil
	}
	if len(s) > 300 {
		s = s[:300] + "..."
	}
	return fmt.Errorf("%w: %s %q: %s", errs.ErrInvalidArgument, kind, s, rule)
}
