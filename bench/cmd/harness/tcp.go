package main

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"time"
)

// tcpEcho is a client of the baseline TCP echo server: a 4-byte length
// prefix and the payload, TCP_NODELAY, one connection, buffers reused.
type tcpEcho struct {
	c   *net.TCPConn
	r   *bufio.Reader
	buf []byte
}

func dialTCPEcho(addr string) (*tcpEcho, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	tc := c.(*net.TCPConn)
	_ = tc.SetNoDelay(true)
	return &tcpEcho{c: tc, r: bufio.NewReaderSize(tc, 64<<10)}, nil
}

func (t *tcpEcho) Close() error { return t.c.Close() }

// roundTrip sends payload and reads the echo.
func (t *tcpEcho) roundTrip(payload []byte) error {
	var hdr [4]byte
	binary.BigEndian.PutUint32(hdr[:], uint32(len(payload)))
	bufs := net.Buffers{hdr[:], payload}
	if _, err := bufs.WriteTo(t.c); err != nil {
		return err
	}
	if _, err := io.ReadFull(t.r, hdr[:]); err != nil {
		return err
	}
	n := int(binary.BigEndian.Uint32(hdr[:]))
	if n != len(payload) {
		return fmt.Errorf("echo of %d bytes, want %d", n, len(payload))
	}
	if cap(t.buf) < n {
		t.buf = make([]byte, n)
	}
	_, err := io.ReadFull(t.r, t.buf[:n])
	return err
}

// pipeline keeps inflight requests in flight on the connection until stop
// is closed, counting completed round trips in done. One goroutine writes,
// one reads; the server answers in order.
func (t *tcpEcho) pipeline(payload []byte, inflight int, done *atomic.Int64, stop <-chan struct{}) error {
	slots := make(chan struct{}, inflight)
	frame := binary.BigEndian.AppendUint32(nil, uint32(len(payload)))
	frame = append(frame, payload...)
	readErr := make(chan error, 1)
	go func() {
		var hdr [4]byte
		buf := make([]byte, len(payload))
		for {
			if _, err := io.ReadFull(t.r, hdr[:]); err != nil {
				readErr <- err
				return
			}
			if _, err := io.ReadFull(t.r, buf[:binary.BigEndian.Uint32(hdr[:])]); err != nil {
				readErr <- err
				return
			}
			done.Add(1)
			<-slots
		}
	}()
	for {
		select {
		case slots <- struct{}{}:
		case <-stop:
			// Let the answers in flight arrive, then end the reader.
			deadline := time.Now().Add(5 * time.Second)
			for len(slots) > 0 && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
			t.c.Close()
			<-readErr
			return nil
		case err := <-readErr:
			return err
		}
		if _, err := t.c.Write(frame); err != nil {
			return err
		}
	}
}
