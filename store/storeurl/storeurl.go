// Package storeurl opens the metadata and swap stores named by URLs, the way
// the control plane's flags and config give them:
//
//	metadata: "" or "bolt://" (DATA/meta.db), "bolt:///abs/path.db",
//	          "redis://host:port/db" or "rediss://..." (see package redis),
//	          "mem://" or "memory://" (a new, empty in-memory store that
//	          lives as long as the value returned; for tests)
//	swap:     "" or "file://" (DATA/swap), "file:///abs/dir",
//	          "s3://bucket?..." (see package s3)
//
// where DATA is the control plane's data directory. An unknown scheme or a
// malformed URL is an error wrapping errs.ErrInvalidArgument.
package storeurl

import (
	"context"
	"fmt"
	"net/url"
	"path/filepath"

	"github.com/praas-dev/praas/errs"
	"github.com/praas-dev/praas/store"
	"github.com/praas-dev/praas/store/bolt"
	"github.com/praas-dev/praas/store/file"
	"github.com/praas-dev/praas/store/memory"
	"github.com/praas-dev/praas/store/redis"
	"github.com/praas-dev/praas/store/s3"
)

// OpenMetadata opens the metadata store named by rawURL; dataDir holds the
// default embedded store.
func OpenMetadata(ctx context.Context, rawURL, dataDir string) (store.Metadata, error) {
	u, err := parse(rawURL, "bolt")
	if err != nil {
		return nil, err
	}
	switch u.Scheme {
	case "bolt":
		path, err := localPath(u, dataDir, "meta.db")
		if err != nil {
			return nil, err
		}
		return bolt.Open(path)
	case "redis", "rediss":
		return redis.Open(ctx, rawURL)
	case "mem", "memory":
		if u.Host != "" || u.Opaque != "" || u.Path != "" || u.RawQuery != "" {
			return nil, fmt.Errorf("store URL %q: want %s:// alone: %w", u.Redacted(), u.Scheme, errs.ErrInvalidArgument)
		}
		return memory.New(), nil
	}
	return nil, fmt.Errorf("metadata store %q: unknown scheme %q (want bolt, redis, rediss or mem): %w",
		u.Redacted(), u.Scheme, errs.ErrInvalidArgument)
}

// OpenSwap opens the swap store named by rawURL; dataDir holds the default
// file store.
func OpenSwap(ctx context.Context, rawURL, dataDir string) (store.Swap, error) {
	u, err := parse(rawURL, "file")
	if err != nil {
		return nil, err
	}
	switch u.Scheme {
	case "file":
		dir, err := localPath(u, dataDir, "swap")
		if err != nil {
			return nil, err
		}
		return file.Open(dir)
	case "s3":
		return s3.Open(ctx, rawURL)
	}
	return nil, fmt.Errorf("swap store %q: unknown scheme %q (want file or s3): %w",
		u.Redacted(), u.Scheme, errs.ErrInvalidArgument)
}

// parse parses rawURL, taking "" as defaultScheme:// .
func parse(rawURL, defaultScheme string) (*url.URL, error) {
	if rawURL == "" {
		rawURL = defaultScheme + "://"
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		// url.Error quotes the URL, which may hold a password.
		return nil, fmt.Errorf("store URL: malformed: %w", errs.ErrInvalidArgument)
	}
	return u, nil
}

// localPath returns the absolute path of a bolt:// or file:// URL, or
// dataDir/name when the URL has none.
func localPath(u *url.URL, dataDir, name string) (string, error) {
	switch {
	case u.Host != "" || u.Opaque != "" || u.RawQuery != "":
		return "", fmt.Errorf("store URL %q: want %s:///absolute/path: %w", u.Redacted(), u.Scheme, errs.ErrInvalidArgument)
	case u.Path != "":
		if !filepath.IsAbs(u.Path) {
			return "", fmt.Errorf("store URL %q: path is not absolute: %w", u.Redacted(), errs.ErrInvalidArgument)
		}
		return filepath.Clean(u.Path), nil
	case dataDir == "":
		return "", fmt.Errorf("store URL %q: no path and no data directory: %w", u.Redacted(), errs.ErrInvalidArgument)
	}
	return filepath.Join(dataDir, name), nil
}
