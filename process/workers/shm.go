package workers

import (
	"encoding/binary"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// shmMin is the payload size from which an input or a result goes through
// the worker's shared memory instead of the socket: a payload through a
// socketpair crosses the kernel's socket buffer (about 200 KiB) in several
// rounds, each waking the other side; through shared memory it is one copy
// in and one out, and the frame stays small.
const shmMin = 64 << 10

// shm is a worker's shared memory: a memfd the worker inherits as fd 4,
// mapped by both. It only grows. The side that holds the invocation owns
// it: the runtime from taking an idle worker until it sends the Invoke,
// the worker until it sends the Result, the runtime again until it copied
// the result out.
type shm struct {
	f   *os.File
	mem []byte
}

func newShm() (*shm, error) {
	fd, err := unix.MemfdCreate("praas-worker", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, err
	}
	return &shm{f: os.NewFile(uintptr(fd), "praas-worker-shm")}, nil
}

// ensure makes the memory at least n bytes long.
func (s *shm) ensure(n int) error {
	if n <= len(s.mem) {
		return nil
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(s.f.Fd()), &st); err != nil {
		return err
	}
	size := int(st.Size)
	if size < n {
		size = max(1<<20, len(s.mem))
		for size < n {
			size *= 2
		}
		if err := unix.Ftruncate(int(s.f.Fd()), int64(size)); err != nil {
			return err
		}
	}
	return s.remap(size)
}

// sync maps the memory at its current size (the worker may have grown it).
func (s *shm) sync(n int) error {
	if n <= len(s.mem) {
		return nil
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(s.f.Fd()), &st); err != nil {
		return err
	}
	if int(st.Size) < n {
		return fmt.Errorf("%w: result of %d bytes in shared memory of %d", errMalformed, n, st.Size)
	}
	return s.remap(int(st.Size))
}

func (s *shm) remap(size int) error {
	if s.mem != nil {
		unix.Munmap(s.mem)
		s.mem = nil
	}
	mem, err := unix.Mmap(int(s.f.Fd()), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return err
	}
	s.mem = mem
	return nil
}

func (s *shm) close() {
	if s.mem != nil {
		unix.Munmap(s.mem)
		s.mem = nil
	}
	s.f.Close()
}

// shmLen encodes the payload of a frame with flagShm.
func shmLen(n int) []byte { return binary.BigEndian.AppendUint64(nil, uint64(n)) }

// readShmLen decodes it.
func readShmLen(payload []byte) (int, error) {
	if len(payload) != 8 {
		return 0, fmt.Errorf("%w: shared-memory payload of %d bytes", errMalformed, len(payload))
	}
	n := binary.BigEndian.Uint64(payload)
	if n > maxPayload {
		return 0, fmt.Errorf("%w: %d bytes in shared memory", errMalformed, n)
	}
	return int(n), nil
}
