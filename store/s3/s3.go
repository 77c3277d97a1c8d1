// Package s3 implements store.Swap on S3-compatible object storage (AWS S3,
// MinIO, versitygw, ...), for control planes that share snapshots or run
// processes on several machines.
//
// Open it with a URL:
//
//	s3://BUCKET?endpoint=HOST:PORT&access_key=...&secret_key=...&secure=false&region=...&prefix=...
//
// Every parameter is optional. endpoint defaults to AWS (s3.amazonaws.com),
// secure to true, region to us-east-1; the credentials fall back to the
// AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN environment
// variables; prefix is prepended to every key. The bucket is created if it
// does not exist.
//
// Keys follow the same rules as package file's (clean relative paths), so that
// snapshots can move between the two stores.
//
// The store is a store.Presigner: PresignPut and PresignGet sign, locally,
// a URL for one object and one method, with which a process that holds no
// credentials writes (one PUT with Content-Length, up to the 5 GiB that S3
// takes in one request) or reads its snapshot.
//
// Put streams: objects up to 16 MiB go up in one request, larger or unsized
// ones as a multipart upload of 16 MiB parts, holding at most a few parts in
// memory. S3 makes
// an object visible only once its upload completes, which gives the atomicity
// store.Swap requires.
package s3

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/praas-dev/praas/errs"
	"github.com/praas-dev/praas/store"
)

// Upload tuning: Put holds at most uploadThreads parts of partSize bytes.
const (
	partSize      = 16 << 20
	uploadThreads = 4
)

// Store is a store.Swap on one bucket.
type Store struct {
	client *minio.Client
	bucket string
	prefix string
}

var (
	_ store.Swap      = (*Store)(nil)
	_ store.Presigner = (*Store)(nil)
)

// Open connects to the bucket named by rawURL (see the package comment),
// creating it if needed.
func Open(ctx context.Context, rawURL string) (*Store, error) {
	u, err := url.Parse(rawURL)
	if err != nil || u.Scheme != "s3" || u.Host == "" || (u.Path != "" && u.Path != "/") {
		return nil, fmt.Errorf("s3: bad URL %q, want s3://BUCKET?options: %w", redact(rawURL), errs.ErrInvalidArgument)
	}
	q := u.Query()
	for k := range q {
		switch k {
		case "endpoint", "access_key", "secret_key", "secure", "region", "prefix":
		default:
			return nil, fmt.Errorf("s3: unknown URL parameter %q: %w", k, errs.ErrInvalidArgument)
		}
	}
	endpoint := cmp.Or(q.Get("endpoint"), "s3.amazonaws.com")
	secure := true
	if v := q.Get("secure"); v != "" {
		if secure, err = strconv.ParseBool(v); err != nil {
			return nil, fmt.Errorf("s3: bad secure=%q: %w", v, errs.ErrInvalidArgument)
		}
	}
	region := cmp.Or(q.Get("region"), "us-east-1")
	access, secret, token := q.Get("access_key"), q.Get("secret_key"), ""
	if access == "" && secret == "" {
		access, secret = os.Getenv("AWS_ACCESS_KEY_ID"), os.Getenv("AWS_SECRET_ACCESS_KEY")
		token = os.Getenv("AWS_SESSION_TOKEN")
	}
	client, err := minio.New(endpoint, &minio.Options{
		Creds:  credentials.NewStaticV4(access, secret, token),
		Secure: secure,
		Region: region,
	})
	if err != nil {
		return nil, fmt.Errorf("s3: %w: %w", err, errs.ErrInvalidArgument)
	}
	s := &Store{client: client, bucket: u.Host, prefix: q.Get("prefix")}
	if err := s.ensureBucket(ctx, region); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Store) ensureBucket(ctx context.Context, region string) error {
	ok, err := s.client.BucketExists(ctx, s.bucket)
	if err != nil {
		return fmt.Errorf("s3: bucket %s: %w", s.bucket, err)
	}
	if ok {
		return nil
	}
	err = s.client.MakeBucket(ctx, s.bucket, minio.MakeBucketOptions{Region: region})
	if code := minio.ToErrorResponse(err).Code; code == "BucketAlreadyOwnedByYou" || code == "BucketAlreadyExists" {
		return nil // created meanwhile by another control plane
	}
	if err != nil {
		return fmt.Errorf("s3: create bucket %s: %w", s.bucket, err)
	}
	return nil
}

// Close does nothing: the client holds only idle connections.
func (s *Store) Close() error { return nil }

// object maps key to its object name, or fails with errs.ErrInvalidArgument.
func (s *Store) object(key string) (string, error) {
	bad := key == "" || path.IsAbs(key) || path.Clean(key) != key || strings.ContainsRune(key, 0)
	for _, c := range strings.Split(key, "/") {
		bad = bad || c == ".." || c == "."
	}
	if bad {
		return "", fmt.Errorf("s3: bad key %q: %w", key, errs.ErrInvalidArgument)
	}
	return s.prefix + key, nil
}

func (s *Store) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	name, err := s.object(key)
	if err != nil {
		return err
	}
	if size >= 0 {
		r = &exactReader{r: r, left: size}
	}
	_, err = s.client.PutObject(ctx, s.bucket, name, r, size, minio.PutObjectOptions{
		ContentType: "application/octet-stream",
		PartSize:    partSize,
		NumThreads:  uploadThreads,
	})
	if err != nil {
		return fmt.Errorf("s3: put %q: %w", key, err)
	}
	return nil
}

// Get returns the object's content, streamed from a single GET request so
// that every byte comes from one version of the object. The body is read
// under ctx: cancelling it stops the reads of the returned reader too.
func (s *Store) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	name, err := s.object(key)
	if err != nil {
		return nil, err
	}
	// Client.GetObject would be lazy and refetch with If-Match on its first
	// read, failing when a Put lands between the two requests.
	body, _, _, err := minio.Core{Client: s.client}.GetObject(ctx, s.bucket, name, minio.GetObjectOptions{})
	if isNotFound(err) {
		return nil, fmt.Errorf("snapshot %q: %w", key, errs.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("s3: get %q: %w", key, err)
	}
	return body, nil
}

func (s *Store) Delete(ctx context.Context, key string) error {
	name, err := s.object(key)
	if err != nil {
		return err
	}
	err = s.client.RemoveObject(ctx, s.bucket, name, minio.RemoveObjectOptions{})
	if err != nil && !isNotFound(err) {
		return fmt.Errorf("s3: delete %q: %w", key, err)
	}
	return nil
}

// PresignPut returns a URL through which one PUT with Content-Length
// writes key, until ttl (1s to 7 days) has passed.
func (s *Store) PresignPut(ctx context.Context, key string, ttl time.Duration) (*url.URL, error) {
	name, err := s.object(key)
	if err != nil {
		return nil, err
	}
	u, err := s.client.PresignedPutObject(ctx, s.bucket, name, ttl)
	if err != nil {
		return nil, fmt.Errorf("s3: presign put %q: %w", key, err)
	}
	return u, nil
}

// PresignGet returns a URL through which a GET reads key, until ttl (1s to 7
// days) has passed.
func (s *Store) PresignGet(ctx context.Context, key string, ttl time.Duration) (*url.URL, error) {
	name, err := s.object(key)
	if err != nil {
		return nil, err
	}
	u, err := s.client.PresignedGetObject(ctx, s.bucket, name, ttl, nil)
	if err != nil {
		return nil, fmt.Errorf("s3: presign get %q: %w", key, err)
	}
	return u, nil
}

func isNotFound(err error) bool {
	code := minio.ToErrorResponse(err).Code
	return code == "NoSuchKey" || code == "NotFound"
}

// exactReader passes through exactly left bytes of r and fails if r is
// shorter or longer, so that a wrong size fails the upload instead of storing
// a truncated object.
type exactReader struct {
	r    io.Reader
	left int64
}

var errTooLong = errors.New("source longer than the given size")

func (e *exactReader) Read(p []byte) (int, error) {
	if e.left <= 0 {
		return 0, e.checkEnd()
	}
	if int64(len(p)) > e.left {
		p = p[:e.left]
	}
	n, err := e.r.Read(p)
	e.left -= int64(n)
	switch {
	case err == io.EOF && e.left > 0:
		return n, io.ErrUnexpectedEOF
	case err == nil && e.left == 0:
		// Look past the end now: the uploader stops reading at size bytes
		// and would never see the excess.
		err = e.checkEnd()
	}
	return n, err
}

// checkEnd returns io.EOF if r has no more data and errTooLong if it has.
func (e *exactReader) checkEnd() error {
	var b [1]byte
	for {
		n, err := e.r.Read(b[:])
		if n > 0 {
			return errTooLong
		}
		if err != nil {
			if err == io.EOF {
				return io.EOF
			}
			return err
		}
	}
}

// redact hides the secret key in a URL shown in an error.
func redact(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "(unparsable)"
	}
	q := u.Query()
	if q.Has("secret_key") {
		q.Set("secret_key", "REDACTED")
		u.RawQuery = q.Encode()
	}
	return u.String()
}
