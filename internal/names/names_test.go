package names

import (
	"strings"
	"testing"

	"github.com/praas-dev/praas/errs"
)

func TestNames(t *testing.T) {
	tests := []struct {
		check func(string) error
		in    string
		ok    bool
	}{
		{App, "demo", true},
		{App, "a.b_c-9", true},
		{App, strings.Repeat("a", 63), true},
		{App, strings.Repeat("a", 64), false},
		{App, "", false},
		{App, "../etc", false},
		{App, "-x", false},
		{App, "a/b", false},
		{PID, "p1", true},
		{PID, "a b", false},
		{Function, "state-get", true},
		{Function, strings.Repeat("f", 128), true},
		{Function, strings.Repeat("f", 129), false},
		{Function, "sum:round1", false},
		{Function, "", false},
		{Key, "sum:round1", true},
		{Key, "a/b@c", true},
		{Key, "ключ", true},
		{Key, strings.Repeat("k", 255), true},
		{Key, strings.Repeat("k", 256), false},
		{Key, "", false},
		{Key, "a b", false},
		{Key, "a\nb", false},
		{Key, "\xff", false},
		{Key, "praas:control-plane", false},
	}
	for _, tt := range tests {
		err := tt.check(tt.in)
		if (err == nil) != tt.ok {
			t.Errorf("%q: got %v, want ok=%v", tt.in, err, tt.ok)
		}
		if err != nil && errs.CodeOf(err) != errs.InvalidArgument {
			t.Errorf("%q: code %v, want invalid argument", tt.in, errs.CodeOf(err))
		}
	}
}
