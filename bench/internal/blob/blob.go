// Package blob gives the benchmarks plain access to the stores praas is
// compared with: an S3-compatible bucket (named by the same s3:// URLs the
// praas swap store takes) and Redis.
package blob

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strconv"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/redis/go-redis/v9"
)

// S3 is one bucket.
type S3 struct {
	Client *minio.Client
	Bucket string
}

// OpenS3 connects to s3://BUCKET?endpoint=&access_key=&secret_key=&secure=&region=
// and creates the bucket if needed.
func OpenS3(ctx context.Context, raw string) (*S3, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "s3" || u.Host == "" {
		return nil, fmt.Errorf("bad S3 URL (want s3://BUCKET?endpoint=...)")
	}
	q := u.Query()
	secure := false
	if v := q.Get("secure"); v != "" {
		if secure, err = strconv.ParseBool(v); err != nil {
			return nil, fmt.Errorf("S3 URL: secure=%q: %w", v, err)
		}
	}
	region := q.Get("region")
	if region == "" {
		region = "us-east-1"
	}
	c, err := minio.New(q.Get("endpoint"), &minio.Options{
		Creds:  credentials.NewStaticV4(q.Get("access_key"), q.Get("secret_key"), ""),
		Secure: secure,
		Region: region,
	})
	if err != nil {
		return nil, err
	}
	s := &S3{Client: c, Bucket: u.Host}
	ok, err := c.BucketExists(ctx, s.Bucket)
	if err != nil {
		return nil, fmt.Errorf("S3 bucket %s: %w", s.Bucket, err)
	}
	if !ok {
		if err := c.MakeBucket(ctx, s.Bucket, minio.MakeBucketOptions{Region: region}); err != nil {
			return nil, fmt.Errorf("S3 create bucket %s: %w", s.Bucket, err)
		}
	}
	return s, nil
}

// Put uploads data as one object with the client's default options (one
// request up to 16 MiB, multipart above), as an application would.
func (s *S3) Put(ctx context.Context, key string, data []byte) error {
	_, err := s.Client.PutObject(ctx, s.Bucket, key, bytes.NewReader(data), int64(len(data)),
		minio.PutObjectOptions{ContentType: "application/octet-stream"})
	return err
}

// PutStream uploads size bytes from r with the part size and upload threads
// the praas S3 swap store uses (16 MiB parts, 4 threads).
func (s *S3) PutStream(ctx context.Context, key string, r io.Reader, size int64) error {
	_, err := s.Client.PutObject(ctx, s.Bucket, key, r, size,
		minio.PutObjectOptions{ContentType: "application/octet-stream", PartSize: 16 << 20, NumThreads: 4})
	return err
}

// ErrNotFound is returned by Get for an absent key.
var ErrNotFound = errors.New("no such key")

// Get downloads an object into buf (grown as needed) and returns it.
func (s *S3) Get(ctx context.Context, key string, buf []byte) ([]byte, error) {
	// One GET request, as the praas S3 swap store reads snapshots.
	obj, _, _, err := minio.Core{Client: s.Client}.GetObject(ctx, s.Bucket, key, minio.GetObjectOptions{})
	if err != nil {
		if code := minio.ToErrorResponse(err).Code; code == "NoSuchKey" || code == "NotFound" {
			return nil, ErrNotFound
		}
		return nil, err
	}
	defer obj.Close()
	b := bytes.NewBuffer(buf[:0])
	if _, err := io.Copy(b, obj); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// Delete removes an object.
func (s *S3) Delete(ctx context.Context, key string) error {
	return s.Client.RemoveObject(ctx, s.Bucket, key, minio.RemoveObjectOptions{})
}

// OpenRedis connects to redis://HOST:PORT/DB.
func OpenRedis(ctx context.Context, raw string, poolSize int) (*redis.Client, error) {
	opt, err := redis.ParseURL(raw)
	if err != nil {
		return nil, err
	}
	if poolSize > 0 {
		opt.PoolSize = poolSize
	}
	c := redis.NewClient(opt)
	if err := c.Ping(ctx).Err(); err != nil {
		c.Close()
		return nil, fmt.Errorf("redis: %w", err)
	}
	return c, nil
}
