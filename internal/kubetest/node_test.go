package kubetest

import "testing"

func TestExpand(t *testing.T) {
	vals := map[string]string{"IP": "127.1.2.3", "EMPTY": ""}
	for _, c := range []struct{ in, want string }{
		{"$(IP):7420", "127.1.2.3:7420"},
		{"$$(IP)", "$(IP)"},
		{"$(MISSING)", "$(MISSING)"},
		{"a$(EMPTY)b", "ab"},
		{"$", "$"},
		{"$(IP", "$(IP"},
		{"$x$$", "$x$"},
		{"plain", "plain"},
	} {
		if got := expand(c.in, vals); got != c.want {
			t.Errorf("expand(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}
