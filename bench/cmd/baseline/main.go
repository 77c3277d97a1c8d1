// Command baseline serves the floors the praas invocation paths are
// measured against, each in its own OS process as a praas process is:
//
//	baseline tcp-echo    a TCP server echoing frames of a 4-byte big-endian
//	                     length and a payload; pipelined, buffers reused
//	baseline http-echo   a net/http server answering a POST with its body
//
// It listens on a free loopback port, prints "listening ADDR" and serves
// until SIGTERM or SIGINT.
//
//	baseline read-fresh FILE
//
// reads FILE into newly allocated 1 MiB slices and exits: what restoring a
// snapshot into a new process costs at the least.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
)

func main() {
	if len(os.Args) == 3 && os.Args[1] == "read-fresh" {
		if err := readFresh(os.Args[2]); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: baseline tcp-echo|http-echo|read-fresh FILE")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	go func() { <-ctx.Done(); ln.Close() }()
	fmt.Printf("listening %s\n", ln.Addr())
	switch os.Args[1] {
	case "tcp-echo":
		err = serveTCP(ln)
	case "http-echo":
		err = http.Serve(ln, http.HandlerFunc(echoHTTP))
	default:
		err = fmt.Errorf("unknown mode %q", os.Args[1])
	}
	if err != nil && ctx.Err() == nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func serveTCP(ln net.Listener) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		_ = c.(*net.TCPConn).SetNoDelay(true)
		go echoConn(c)
	}
}

// echoConn answers each frame with the same frame. Replies to frames that
// arrived together leave in one write: it flushes when no more input is
// buffered, so pipelined requests are batched as the praas writer does.
func echoConn(c net.Conn) {
	defer c.Close()
	r := bufio.NewReaderSize(c, 64<<10)
	w := bufio.NewWriterSize(c, 64<<10)
	var hdr [4]byte
	buf := make([]byte, 0, 64<<10)
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return
		}
		n := int(binary.BigEndian.Uint32(hdr[:]))
		if cap(buf) < n {
			buf = make([]byte, n)
		}
		buf = buf[:n]
		if _, err := io.ReadFull(r, buf); err != nil {
			return
		}
		w.Write(hdr[:])
		w.Write(buf)
		if r.Buffered() == 0 {
			if err := w.Flush(); err != nil {
				return
			}
		}
	}
}

var bufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// echoHTTP reads the whole request body (an HTTP/1 handler must before it
// answers) into a reused buffer and answers it.
func echoHTTP(w http.ResponseWriter, r *http.Request) {
	b := bufPool.Get().(*bytes.Buffer)
	defer bufPool.Put(b)
	b.Reset()
	if _, err := b.ReadFrom(r.Body); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Length", strconv.Itoa(b.Len()))
	w.Header().Set("Content-Type", "application/octet-stream")
	_, _ = w.Write(b.Bytes())
}

var sink [][]byte

func readFresh(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	for {
		b := make([]byte, 1<<20)
		n, err := io.ReadFull(f, b)
		if n > 0 {
			sink = append(sink, b[:n])
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}
