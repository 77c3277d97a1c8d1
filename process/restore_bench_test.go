package process

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// BenchmarkReadSnapshot decodes a 64 MiB state of 1 MiB values, as a swap-in
// of a large state does.
func BenchmarkReadSnapshot(b *testing.B) {
	d := &snapshotData{App: "a", PID: "p", Taken: time.Now(), State: map[string][]byte{}}
	for i := range 64 {
		d.State[fmt.Sprintf("blob/%06d", i)] = bytes.Repeat([]byte{byte(i)}, 1<<20)
	}
	var buf bytes.Buffer
	if err := writeSnapshot(&buf, d); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(buf.Len()))
	for b.Loop() {
		if _, err := readSnapshot(bytes.NewReader(buf.Bytes())); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReadSnapshotHTTP decodes the same snapshot streamed over HTTP.
func BenchmarkReadSnapshotHTTP(b *testing.B) {
	d := &snapshotData{App: "a", PID: "p", Taken: time.Now(), State: map[string][]byte{}}
	d.State["big"] = bytes.Repeat([]byte{1}, 50<<20)
	var buf bytes.Buffer
	if err := writeSnapshot(&buf, d); err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.Copy(w, bytes.NewReader(buf.Bytes()))
	}))
	defer srv.Close()
	b.SetBytes(int64(buf.Len()))
	for b.Loop() {
		resp, err := http.Get(srv.URL)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := readSnapshot(resp.Body); err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
	}
}
