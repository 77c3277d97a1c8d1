// Package file implements store.Swap on a local directory: the default swap
// store of a single-machine praas, keeping snapshots under the data directory.
//
// A key maps to the file of the same relative path ("app/pid/3" is
// DIR/app/pid/3). Keys must be clean, relative, slash-separated paths: no
// "..", ".", empty or absolute components, and no component starting with
// ".praas-tmp-", the prefix of files being written. As on a file system, a
// key cannot be both an object and a directory of other keys.
//
// Put writes a temporary file in the key's directory, fsyncs it, renames it
// over the key and fsyncs the directory, so a reader sees the old or the new
// file and a crash leaves one of them whole.
package file

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/praas-dev/praas/errs"
	"github.com/praas-dev/praas/store"
)

const tmpPrefix = ".praas-tmp-"

// Store is a store.Swap on a directory.
type Store struct {
	dir string
}

var _ store.Swap = (*Store)(nil)

// Open returns a store rooted at dir, creating it if needed.
func Open(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("file: %w", err)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("file: %w", err)
	}
	return &Store{dir: abs}, nil
}

// Dir returns the store's root directory.
func (s *Store) Dir() string { return s.dir }

// Close does nothing: the store holds no resources.
func (s *Store) Close() error { return nil }

// path maps key to its file, or fails with errs.ErrInvalidArgument.
func (s *Store) path(key string) (string, error) {
	bad := key == "" || path.IsAbs(key) || path.Clean(key) != key ||
		strings.ContainsAny(key, "\\\x00") || !filepath.IsLocal(filepath.FromSlash(key))
	for _, c := range strings.Split(key, "/") {
		bad = bad || c == ".." || c == "." || strings.HasPrefix(c, tmpPrefix)
	}
	if bad {
		return "", fmt.Errorf("file: bad key %q: %w", key, errs.ErrInvalidArgument)
	}
	return filepath.Join(s.dir, filepath.FromSlash(key)), nil
}

func (s *Store) Put(ctx context.Context, key string, r io.Reader, size int64) (err error) {
	name, err := s.path(key)
	if err != nil {
		return err
	}
	dir := filepath.Dir(name)
	if err := s.mkdirAll(dir); err != nil {
		return fmt.Errorf("file: put %q: %w", key, err)
	}
	f, err := os.CreateTemp(dir, tmpPrefix+"*")
	if err != nil {
		return fmt.Errorf("file: put %q: %w", key, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	n, err := io.Copy(f, ctxReader{ctx, r})
	if err != nil {
		return fmt.Errorf("file: put %q: %w", key, err)
	}
	if size >= 0 && n != size {
		return fmt.Errorf("file: put %q: read %d bytes, want %d: %w", key, n, size, io.ErrUnexpectedEOF)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("file: put %q: %w", key, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("file: put %q: %w", key, err)
	}
	if err := os.Rename(f.Name(), name); err != nil {
		return fmt.Errorf("file: put %q: %w", key, err)
	}
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("file: put %q: %w", key, err)
	}
	return nil
}

// Get returns the key's file, an *os.File.
func (s *Store) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	name, err := s.path(key)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(name)
	if absent(err) {
		return nil, fmt.Errorf("snapshot %q: %w", key, errs.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("file: get %q: %w", key, err)
	}
	if fi, err := f.Stat(); err != nil || fi.IsDir() {
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("file: get %q: %w", key, err)
		}
		return nil, fmt.Errorf("snapshot %q (a directory of keys): %w", key, errs.ErrNotFound)
	}
	return f, nil
}

func (s *Store) Delete(ctx context.Context, key string) error {
	name, err := s.path(key)
	if err != nil {
		return err
	}
	if fi, err := os.Lstat(name); err == nil && fi.IsDir() {
		return nil // a directory of other keys, not an object
	}
	err = os.Remove(name)
	if err == nil || absent(err) {
		return nil
	}
	return fmt.Errorf("file: delete %q: %w", key, err)
}

// mkdirAll creates dir and its missing parents below s.dir, fsyncing the
// parent of each directory it creates so that the new entries are durable.
func (s *Store) mkdirAll(dir string) error {
	if dir == s.dir {
		return nil
	}
	if fi, err := os.Stat(dir); err == nil && fi.IsDir() {
		return nil
	}
	parent := filepath.Dir(dir)
	if err := s.mkdirAll(parent); err != nil {
		return err
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil // made by a concurrent Put, or a file (Create fails then)
		}
		return err
	}
	return syncDir(parent)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// absent reports whether err means there is no file: none of that name,
// or a path component is an object's file rather than a directory.
func absent(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR)
}

// WriteTo lets a source that can write itself (a snapshot encoder) write
// straight into the file, large values without an intermediate copy; ctx is
// checked between writes.
func (c ctxReader) WriteTo(w io.Writer) (int64, error) {
	if wt, ok := c.r.(io.WriterTo); ok {
		return wt.WriteTo(ctxWriter{c.ctx, w})
	}
	// Hide both sides' fast paths so the 1 MiB buffer is used.
	return io.CopyBuffer(struct{ io.Writer }{w}, struct{ io.Reader }{c}, make([]byte, 1<<20))
}

// ctxWriter stops a write-through once ctx is done.
type ctxWriter struct {
	ctx context.Context
	w   io.Writer
}

func (c ctxWriter) Write(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.w.Write(p)
}

// ctxReader stops a copy once ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
