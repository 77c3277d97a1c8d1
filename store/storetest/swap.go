package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/praas-dev/praas/errs"
	"github.com/praas-dev/praas/store"
)

// bigSize is the size of the object the streaming test writes: more than two
// parts of a 16 MiB multipart upload.
const bigSize = 40<<20 + 12345

// SwapOption configures RunSwap.
type SwapOption func(*swapSuite)

// ReopenSwap gives RunSwap a way to open a store again over the data of
// closed, a store that open returned and the suite has closed. It enables the
// persistence test.
func ReopenSwap(reopen func(t *testing.T, closed store.Swap) store.Swap) SwapOption {
	return func(s *swapSuite) { s.reopen = reopen }
}

type swapSuite struct {
	open   func(t *testing.T) store.Swap
	reopen func(t *testing.T, closed store.Swap) store.Swap
}

// RunSwap runs the conformance suite for store.Swap. open must return a new,
// empty store each time it is called; the suite closes it.
func RunSwap(t *testing.T, open func(t *testing.T) store.Swap, opts ...SwapOption) {
	s := &swapSuite{open: open}
	for _, o := range opts {
		o(s)
	}
	tests := []struct {
		name string
		fn   func(t *testing.T, ctx context.Context, sw store.Swap)
	}{
		{"Absent", testSwapAbsent},
		{"RoundTrip", testSwapRoundTrip},
		{"Overwrite", testSwapOverwrite},
		{"Delete", testSwapDelete},
		{"InvalidKeys", testSwapInvalidKeys},
		{"StreamBig", testSwapStreamBig},
		{"FailedPutKeepsOld", testSwapFailedPutKeepsOld},
		{"ConcurrentOverwriteAtomic", testSwapConcurrentOverwrite},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sw := open(t)
			t.Cleanup(func() {
				if err := sw.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			})
			tt.fn(t, t.Context(), sw)
		})
	}
	t.Run("Persistence", func(t *testing.T) {
		if s.reopen == nil {
			t.Skip("no reopen function given")
		}
		s.testPersistence(t, t.Context())
	})
}

// onlyReader hides every method but Read, so that a store cannot seek, stat
// or read at offsets: it has to stream.
type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }

// pseudo returns n bytes of reproducible pseudo-random data.
func pseudo(seed uint64, n int64) io.Reader {
	var key [32]byte
	key[0] = byte(seed)
	return io.LimitReader(rand.NewChaCha8(key), n)
}

func put(t *testing.T, ctx context.Context, sw store.Swap, key string, data []byte) {
	t.Helper()
	must(t, "Put "+key, sw.Put(ctx, key, bytes.NewReader(data), int64(len(data))))
}

func get(t *testing.T, ctx context.Context, sw store.Swap, key string) []byte {
	t.Helper()
	rc, err := sw.Get(ctx, key)
	must(t, "Get "+key, err)
	defer rc.Close()
	data, err := io.ReadAll(rc)
	must(t, "reading "+key, err)
	return data
}

func wantData(t *testing.T, ctx context.Context, sw store.Swap, key string, want []byte) {
	t.Helper()
	if got := get(t, ctx, sw, key); !bytes.Equal(got, want) {
		t.Errorf("Get %s = %d bytes %.40q, want %d bytes %.40q", key, len(got), got, len(want), want)
	}
}

func testSwapAbsent(t *testing.T, ctx context.Context, sw store.Swap) {
	for _, key := range []string{"nope", "a/b/c"} {
		_, err := sw.Get(ctx, key)
		wantErr(t, "Get "+key, err, errs.ErrNotFound)
		must(t, "Delete "+key, sw.Delete(ctx, key))
	}
	// A key below an existing object, and a "directory" of keys.
	put(t, ctx, sw, "app/pid", []byte("x"))
	put(t, ctx, sw, "dir/obj", []byte("y"))
	for _, key := range []string{"app/pid/1", "dir"} {
		_, err := sw.Get(ctx, key)
		wantErr(t, "Get "+key, err, errs.ErrNotFound)
		must(t, "Delete "+key, sw.Delete(ctx, key))
	}
	wantData(t, ctx, sw, "dir/obj", []byte("y"))
}

func testSwapRoundTrip(t *testing.T, ctx context.Context, sw store.Swap) {
	objects := []struct {
		key     string
		data    []byte
		unsized bool // Put with size -1
	}{
		{"empty", []byte{}, false},
		{"empty-unsized", []byte{}, true},
		{"small", []byte("hello, snapshot"), false},
		{"small-unsized", []byte("hello again"), true},
		{"binary", []byte{0, 1, 2, 0xff, 0xfe, '\n', '\r', 0}, false},
		{"web/p1/1", []byte("nested"), false},
		{"web/p1/2", []byte("sibling"), true},
		{"web/p10/1", []byte("other pid"), false},
		{"name with spaces+plus&amp=%41", []byte("odd name"), false},
		{"ünïcode/ключ", []byte("utf-8"), false},
	}
	for _, o := range objects {
		size := int64(len(o.data))
		r := io.Reader(bytes.NewReader(o.data))
		if o.unsized {
			size, r = -1, onlyReader{r}
		}
		must(t, "Put "+o.key, sw.Put(ctx, o.key, r, size))
	}
	for _, o := range objects {
		wantData(t, ctx, sw, o.key, o.data)
	}
}

func testSwapOverwrite(t *testing.T, ctx context.Context, sw store.Swap) {
	long := bytes.Repeat([]byte("long "), 1000)
	put(t, ctx, sw, "web/p1", long)
	put(t, ctx, sw, "web/p1", []byte("short"))
	wantData(t, ctx, sw, "web/p1", []byte("short"))
	must(t, "Put unsized", sw.Put(ctx, "web/p1", onlyReader{bytes.NewReader(long)}, -1))
	wantData(t, ctx, sw, "web/p1", long)
	put(t, ctx, sw, "web/p1", nil)
	wantData(t, ctx, sw, "web/p1", nil)
}

func testSwapDelete(t *testing.T, ctx context.Context, sw store.Swap) {
	put(t, ctx, sw, "web/p1/1", []byte("one"))
	put(t, ctx, sw, "web/p1/2", []byte("two"))
	must(t, "Delete", sw.Delete(ctx, "web/p1/1"))
	_, err := sw.Get(ctx, "web/p1/1")
	wantErr(t, "Get after Delete", err, errs.ErrNotFound)
	must(t, "second Delete", sw.Delete(ctx, "web/p1/1"))
	wantData(t, ctx, sw, "web/p1/2", []byte("two"))
	// The key can be written again.
	put(t, ctx, sw, "web/p1/1", []byte("again"))
	wantData(t, ctx, sw, "web/p1/1", []byte("again"))
}

func testSwapInvalidKeys(t *testing.T, ctx context.Context, sw store.Swap) {
	for _, key := range []string{"", "/abs", "/", "..", "../x", "a/../b", "a/..", "./a", "a/.", "a//b", "a/"} {
		t.Run(fmt.Sprintf("%q", key), func(t *testing.T) {
			err := sw.Put(ctx, key, bytes.NewReader([]byte("x")), 1)
			wantErr(t, "Put", err, errs.ErrInvalidArgument)
			_, err = sw.Get(ctx, key)
			wantErr(t, "Get", err, errs.ErrInvalidArgument)
			wantErr(t, "Delete", sw.Delete(ctx, key), errs.ErrInvalidArgument)
		})
	}
}

func testSwapStreamBig(t *testing.T, ctx context.Context, sw store.Swap) {
	for _, tc := range []struct {
		name string
		size int64
	}{{"unsized", -1}, {"sized", bigSize}} {
		t.Run(tc.name, func(t *testing.T) {
			key := "big/" + tc.name
			must(t, "Put", sw.Put(ctx, key, onlyReader{pseudo(1, bigSize)}, tc.size))
			rc, err := sw.Get(ctx, key)
			must(t, "Get", err)
			defer rc.Close()
			sameStream(t, rc, pseudo(1, bigSize))
		})
	}
}

// sameStream reads got and want to the end and fails t at the first
// difference.
func sameStream(t *testing.T, got, want io.Reader) {
	t.Helper()
	const chunk = 1 << 20
	gb, wb := make([]byte, chunk), make([]byte, chunk)
	var off int64
	for {
		wn, werr := io.ReadFull(want, wb)
		gn, gerr := io.ReadFull(got, gb)
		if !bytes.Equal(gb[:gn], wb[:wn]) {
			n := min(gn, wn)
			for i := range n {
				if gb[i] != wb[i] {
					t.Fatalf("byte %d differs: got %#x, want %#x", off+int64(i), gb[i], wb[i])
				}
			}
			t.Fatalf("length differs: got %d bytes, want %d", off+int64(gn), off+int64(wn))
		}
		off += int64(wn)
		if werr != nil || gerr != nil {
			if !isEOF(gerr) {
				t.Fatalf("reading at %d: %v", off, gerr)
			}
			if !isEOF(werr) {
				t.Fatalf("generating at %d: %v", off, werr)
			}
			return
		}
	}
}

func isEOF(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}

// failingReader returns n bytes and then an error.
type failingReader struct {
	r io.Reader
	n int64
}

var errBrokenSource = errors.New("broken source")

func (f *failingReader) Read(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, errBrokenSource
	}
	p = p[:min(int64(len(p)), f.n)]
	n, err := f.r.Read(p)
	f.n -= int64(n)
	return n, err
}

func testSwapFailedPutKeepsOld(t *testing.T, ctx context.Context, sw store.Swap) {
	old := []byte("the previous snapshot")
	put(t, ctx, sw, "web/p1", old)
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	cases := []struct {
		name string
		ctx  context.Context
		r    func() io.Reader
		size int64
	}{
		{"source fails early", ctx, func() io.Reader { return &failingReader{pseudo(2, 1<<20), 1000} }, -1},
		{"source fails late", ctx, func() io.Reader { return &failingReader{pseudo(2, 20<<20), 18 << 20} }, -1},
		{"source fails, sized", ctx, func() io.Reader { return &failingReader{pseudo(2, 4<<20), 3 << 20} }, 4 << 20},
		{"source shorter than size", ctx, func() io.Reader { return onlyReader{pseudo(3, 1000)} }, 2000},
		{"source longer than size", ctx, func() io.Reader { return onlyReader{pseudo(3, 3000)} }, 2000},
		{"context canceled", canceled, func() io.Reader { return onlyReader{pseudo(4, 1000)} }, -1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := sw.Put(tc.ctx, "web/p1", tc.r(), tc.size); err == nil {
				t.Errorf("Put succeeded")
			}
			wantData(t, ctx, sw, "web/p1", old)
			if err := sw.Put(tc.ctx, "web/p2", tc.r(), tc.size); err == nil {
				t.Errorf("Put of a new key succeeded")
			}
			_, err := sw.Get(ctx, "web/p2")
			wantErr(t, "Get of a failed new key", err, errs.ErrNotFound)
		})
	}
}

func testSwapConcurrentOverwrite(t *testing.T, ctx context.Context, sw store.Swap) {
	// Two versions of different sizes and contents; a reader must see one of
	// them whole, never a mix or a prefix.
	versions := [][]byte{bytes.Repeat([]byte("a"), 3<<20), bytes.Repeat([]byte("b"), 2<<20+7)}
	put(t, ctx, sw, "web/p1", versions[0])
	const writes, readers = 12, 3
	var done atomic.Bool
	var reads atomic.Int64
	var wg sync.WaitGroup
	for range readers {
		wg.Go(func() {
			for !done.Load() {
				rc, err := sw.Get(ctx, "web/p1")
				if err != nil {
					t.Errorf("Get during overwrites: %v", err)
					return
				}
				data, err := io.ReadAll(rc)
				rc.Close()
				if err != nil {
					t.Errorf("reading during overwrites: %v", err)
					return
				}
				reads.Add(1)
				if !bytes.Equal(data, versions[0]) && !bytes.Equal(data, versions[1]) {
					t.Errorf("Get during overwrites returned %d bytes starting %.20q: neither version", len(data), data)
					return
				}
			}
		})
	}
	// Overwrite until readers really overlapped the writes (bounded).
	n := 0
	for ; n < writes || (reads.Load() == 0 && n < 100*writes); n++ {
		put(t, ctx, sw, "web/p1", versions[(n+1)%2])
	}
	done.Store(true)
	wg.Wait()
	if reads.Load() == 0 {
		t.Fatalf("no read overlapped %d overwrites: atomicity was not exercised", n)
	}
	t.Logf("%d reads during %d overwrites", reads.Load(), n)
	wantData(t, ctx, sw, "web/p1", versions[n%2])
}

func (s *swapSuite) testPersistence(t *testing.T, ctx context.Context) {
	sw := s.open(t)
	put(t, ctx, sw, "web/p1/1", []byte("kept"))
	put(t, ctx, sw, "web/p1/2", []byte("deleted"))
	put(t, ctx, sw, "web/p2", []byte("old"))
	put(t, ctx, sw, "web/p2", []byte("new"))
	must(t, "Delete", sw.Delete(ctx, "web/p1/2"))
	must(t, "Close", sw.Close())

	sw = s.reopen(t, sw)
	t.Cleanup(func() { sw.Close() })
	wantData(t, ctx, sw, "web/p1/1", []byte("kept"))
	wantData(t, ctx, sw, "web/p2", []byte("new"))
	_, err := sw.Get(ctx, "web/p1/2")
	wantErr(t, "Get of deleted key after reopen", err, errs.ErrNotFound)
}
