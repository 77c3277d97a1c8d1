package testenv

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"testing"
)

// recorder is a testing.TB that records Fatalf and Skip instead of ending
// the test.
type recorder struct {
	testing.TB
	fatal, skip string
}

func (r *recorder) Helper()                        {}
func (r *recorder) Fatalf(format string, a ...any) { r.fatal = fmt.Sprintf(format, a...) }
func (r *recorder) Skip(a ...any)                  { r.skip = fmt.Sprint(a...) }

func captureNotices(t *testing.T) *bytes.Buffer {
	var buf bytes.Buffer
	old := noticeOut
	noticeOut = func() (io.Writer, func()) { return &buf, func() {} }
	t.Cleanup(func() { noticeOut = old })
	return &buf
}

func TestURLSet(t *testing.T) {
	notices := captureNotices(t)
	t.Setenv(EnvRedis, "redis://127.0.0.1:1/0")
	t.Setenv(EnvS3, "s3://b?endpoint=127.0.0.1:2")
	t.Setenv("CI", "true")
	if got := Redis(t); got != "redis://127.0.0.1:1/0" {
		t.Errorf("Redis = %q", got)
	}
	if got := S3(t); got != "s3://b?endpoint=127.0.0.1:2" {
		t.Errorf("S3 = %q", got)
	}
	if notices.Len() != 0 {
		t.Errorf("notice with the servers set: %q", notices)
	}
}

func TestUnsetSkipsWithOneNotice(t *testing.T) {
	for _, ci := range []string{"", "false", "0"} {
		t.Run("CI="+ci, func(t *testing.T) {
			notices := captureNotices(t)
			t.Setenv(EnvRedis, "")
			t.Setenv("CI", ci)
			s := &server{name: "Redis", env: EnvRedis}
			for range 3 {
				r := &recorder{}
				if got := s.url(r); got != "" || r.fatal != "" || r.skip == "" {
					t.Fatalf("url = %q, fatal %q, skip %q; want a skip", got, r.fatal, r.skip)
				}
			}
			want := `SKIPPING Redis tests in internal/testenv: PRAAS_TEST_REDIS not set; run eval "$(scripts/test-servers.sh start)"` + "\n"
			if got := notices.String(); got != want {
				t.Errorf("notices after three skips:\n%q\nwant once:\n%q", got, want)
			}
		})
	}
}

func TestUnsetFailsInCI(t *testing.T) {
	for _, ci := range []string{"true", "1", "TRUE"} {
		t.Run("CI="+ci, func(t *testing.T) {
			notices := captureNotices(t)
			t.Setenv(EnvS3, "")
			t.Setenv("CI", ci)
			r := &recorder{}
			(&server{name: "S3", env: EnvS3}).url(r)
			if r.skip != "" || !strings.Contains(r.fatal, "PRAAS_TEST_S3 not set") {
				t.Errorf("fatal %q, skip %q; want a failure naming PRAAS_TEST_S3", r.fatal, r.skip)
			}
			if notices.Len() != 0 {
				t.Errorf("notice in CI: %q", notices)
			}
		})
	}
}

func TestPackageOf(t *testing.T) {
	tests := []struct{ function, want string }{
		{"github.com/praas-dev/praas/store/redis_test.serverURL", "store/redis"},
		{"github.com/praas-dev/praas/store/s3.serverURL", "store/s3"},
		{"github.com/praas-dev/praas/cmd/praas.storeFlags", "cmd/praas"},
		{"github.com/praas-dev/praas/store/storeurl_test.TestServers.func1", "store/storeurl"},
		{"github.com/praas-dev/praas.TestSDK", "."},
		{"example.com/other.F", "example.com/other"},
	}
	for _, tc := range tests {
		if got := packageOf(tc.function); got != tc.want {
			t.Errorf("packageOf(%q) = %q, want %q", tc.function, got, tc.want)
		}
	}
}
