package process

import (
	"math/bits"
	"sync"
)

// Input buffers of functions registered with BorrowInput are reused: large
// payloads then need no fresh memory per invocation (allocating, zeroing
// and page-faulting a megabyte costs more than moving it over loopback).
// Buffers come in power-of-two classes from 64 KiB up.

const (
	minPooledShift = 16 // 64 KiB
	maxPooledShift = 27 // 128 MiB
)

var inputPools [maxPooledShift + 1]sync.Pool

// poolClass returns the class of a buffer for n bytes, or -1 if n is not pooled.
func poolClass(n int) int {
	if n <= 0 {
		return -1
	}
	shift := max(bits.Len(uint(n-1)), minPooledShift)
	if shift > maxPooledShift {
		return -1
	}
	return shift
}

// getInput returns a buffer with capacity for n bytes, or nil if n is not pooled.
func getInput(n int) []byte {
	class := poolClass(n)
	if class < 0 {
		return nil
	}
	if p, ok := inputPools[class].Get().(*[]byte); ok {
		return (*p)[:0]
	}
	return make([]byte, 0, 1<<class)
}

// putInput gives a buffer from getInput back.
func putInput(b []byte) {
	class := poolClass(cap(b))
	if class < 0 || cap(b) != 1<<class {
		return
	}
	inputPools[class].Put(&b)
}
