package s3

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net/url"
	"strings"
	"testing"

	"github.com/minio/minio-go/v7"

	"github.com/praas-dev/praas/errs"
	"github.com/praas-dev/praas/internal/testenv"
	"github.com/praas-dev/praas/store"
	"github.com/praas-dev/praas/store/storetest"
)

// serverURL returns the test server's URL, or skips the test loudly (fails it in CI).
func serverURL(t *testing.T) string {
	t.Helper()
	return testenv.S3(t)
}

// withPrefix returns rawURL with a fresh random key prefix.
func withPrefix(t *testing.T, rawURL string) string {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("prefix", "praas-test-"+rand.Text()[:12]+"/")
	u.RawQuery = q.Encode()
	return u.String()
}

// open opens rawURL and removes the objects under its prefix when the test
// ends.
func open(t *testing.T, rawURL string) *Store {
	t.Helper()
	s, err := Open(t.Context(), rawURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx := context.Background()
		objs := s.client.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Prefix: s.prefix, Recursive: true})
		for err := range s.client.RemoveObjects(ctx, s.bucket, objs, minio.RemoveObjectsOptions{}) {
			t.Errorf("cleaning up %s: %v", err.ObjectName, err.Err)
		}
	})
	return s
}

func TestConformance(t *testing.T) {
	base := serverURL(t)
	urls := map[store.Swap]string{} // to reopen a closed store
	storetest.RunSwap(t,
		func(t *testing.T) store.Swap {
			u := withPrefix(t, base)
			s := open(t, u)
			urls[s] = u
			return s
		},
		storetest.ReopenSwap(func(t *testing.T, closed store.Swap) store.Swap {
			return open(t, urls[closed])
		}),
	)
}

func TestOpenCreatesBucket(t *testing.T) {
	u, err := url.Parse(serverURL(t))
	if err != nil {
		t.Fatal(err)
	}
	u.Host = "praas-new-" + strings.ToLower(rand.Text()[:10])
	var s *Store
	t.Cleanup(func() { // after open's cleanup has emptied it
		if s != nil {
			s.client.RemoveBucket(context.Background(), s.bucket)
		}
	})
	s = open(t, u.String())
	ctx := t.Context()
	if err := s.Put(ctx, "k", bytes.NewReader([]byte("v")), 1); err != nil {
		t.Fatal(err)
	}
	// Opening an existing bucket works too.
	if _, err := Open(ctx, u.String()); err != nil {
		t.Errorf("second Open: %v", err)
	}
}

func TestOpenBadURL(t *testing.T) {
	for _, u := range []string{
		"s3://",
		"http://bucket",
		"s3://bucket/path",
		"s3://bucket?endpont=typo",
		"s3://bucket?secure=maybe",
	} {
		_, err := Open(t.Context(), u)
		if !errors.Is(err, errs.ErrInvalidArgument) {
			t.Errorf("Open(%q) = %v, want an invalid-argument error", u, err)
		}
	}
}

func TestExactReader(t *testing.T) {
	tests := []struct {
		name    string
		data    string
		size    int64
		wantErr error
	}{
		{"exact", "hello", 5, nil},
		{"empty", "", 0, nil},
		{"short", "hell", 5, io.ErrUnexpectedEOF},
		{"long", "hello!", 5, errTooLong},
		{"long from empty", "x", 0, errTooLong},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// iotest-style one byte at a time, to hit every boundary.
			r := &exactReader{r: oneByte{bytes.NewReader([]byte(tt.data))}, left: tt.size}
			got, err := io.ReadAll(r)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("ReadAll error = %v, want %v", err, tt.wantErr)
			}
			if tt.wantErr == nil && string(got) != tt.data {
				t.Errorf("ReadAll = %q, want %q", got, tt.data)
			}
		})
	}
}

type oneByte struct{ r io.Reader }

func (o oneByte) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	return o.r.Read(p[:1])
}

func TestPresigner(t *testing.T) {
	base := serverURL(t)
	storetest.RunPresigner(t, func(t *testing.T) storetest.PresignSwap {
		return open(t, withPrefix(t, base))
	})
}
