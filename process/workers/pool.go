package workers

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/praas-dev/praas/errs"
	"github.com/praas-dev/praas/process"
	"github.com/praas-dev/praas/wire"
)

// Config configures a pool of workers.
type Config struct {
	// Command starts one worker: the interpreter and its arguments, e.g.
	// ["/usr/bin/python3", "-m", "praas.worker", "/app/handlers.py"]. The
	// worker finds the protocol socket as file descriptor 3.
	Command []string
	// Env is the workers' environment (default: the runtime's own).
	Env []string
	// Size is the number of workers (default GOMAXPROCS, at least 2).
	Size int
	// App and PID are told to the workers in the welcome.
	App, PID string
	// Output, if set, receives the workers' stdout and stderr (default:
	// the runtime's own stdout and stderr, the process log).
	Output io.Writer
	Logger *slog.Logger
	// NoShm sends large payloads through the socket too, instead of the
	// workers' shared memory (for comparison).
	NoShm bool
}

// Func is a function a worker declared in its hello.
type Func struct {
	Name    string
	Trigger process.Trigger
	N       int
}

// Pool runs invocations on worker processes. Each worker runs one
// invocation at a time and asks for the next one itself (FrameNext), so an
// invocation goes to a worker that is free, and waits while none is.
type Pool struct {
	cfg    Config
	log    *slog.Logger
	funcs  []Func
	idle   chan *worker
	nextID atomic.Uint64

	mu      sync.Mutex
	workers map[*worker]struct{}
	closed  bool
	wg      sync.WaitGroup // reader goroutines and restarts
	stop    chan struct{}  // closed by Close: restarts give up
}

// Start starts cfg.Size workers and waits until the first has said which
// functions it serves. It fails if that worker cannot start.
func Start(cfg Config) (*Pool, error) {
	if len(cfg.Command) == 0 {
		return nil, errors.New("workers: no worker command")
	}
	if cfg.Size <= 0 {
		cfg.Size = max(runtime.GOMAXPROCS(0), 2)
	}
	if cfg.Env == nil {
		cfg.Env = os.Environ()
	}
	p := &Pool{
		cfg:     cfg,
		log:     cmp.Or(cfg.Logger, slog.Default()),
		idle:    make(chan *worker, cfg.Size),
		workers: make(map[*worker]struct{}),
		stop:    make(chan struct{}),
	}
	first, funcs, err := p.spawn()
	if err != nil {
		return nil, err
	}
	p.funcs = funcs
	p.run(first)
	for i := 1; i < cfg.Size; i++ {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.replace(nil)
		}()
	}
	return p, nil
}

// Register registers every worker function in im, with its trigger.
func (p *Pool) Register(im *process.Image) {
	for _, f := range p.funcs {
		var opts []process.Option
		switch f.Trigger {
		case process.Standard:
			opts = append(opts, process.OnMessage())
		case process.MultiSourceTrigger:
			opts = append(opts, process.MultiSource(f.N))
		case process.BatchTrigger:
			opts = append(opts, process.Batch(f.N))
		}
		im.Register(f.Name, p.Handler(f.Name), opts...)
	}
}

// Close stops every worker (closing its socket ends it; one that does not
// end within a second is killed) and waits for them.
func (p *Pool) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	close(p.stop)
	ws := make([]*worker, 0, len(p.workers))
	for w := range p.workers {
		ws = append(ws, w)
	}
	p.mu.Unlock()
	for _, w := range ws {
		w.conn.Close()
		go func() {
			select {
			case <-w.exited:
			case <-time.After(time.Second):
				w.cmd.Process.Kill()
			}
		}()
	}
	p.wg.Wait()
}

// worker is one worker process and its socket.
type worker struct {
	pool   *Pool
	cmd    *exec.Cmd
	conn   net.Conn
	w      frameWriter
	r      *frameReader
	exited chan struct{} // closed once the process was reaped
	shm    *shm          // nil without shared memory
	status string        // its exit status, set before exited is closed

	mu    sync.Mutex
	cur   *invocation // the invocation it runs, if any
	ready bool        // it asked for an invocation and has none yet
}

// invocation is one invocation on a worker.
type invocation struct {
	id   uint64
	ctx  context.Context
	proc *process.Process
	fn   string
	done chan outcome // buffered: whoever ends it never blocks
}

type outcome struct {
	out []byte
	err error
}

// spawn starts a worker and reads its hello.
func (p *Pool) spawn() (*worker, []Func, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("workers: socketpair: %w", err)
	}
	mine, theirs := os.NewFile(uintptr(fds[0]), "worker"), os.NewFile(uintptr(fds[1]), "worker-peer")
	defer theirs.Close()
	conn, err := net.FileConn(mine)
	mine.Close()
	if err != nil {
		return nil, nil, fmt.Errorf("workers: socket: %w", err)
	}
	cmd := exec.Command(p.cfg.Command[0], p.cfg.Command[1:]...)
	cmd.Env = p.cfg.Env
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if p.cfg.Output != nil {
		cmd.Stdout, cmd.Stderr = p.cfg.Output, p.cfg.Output
	}
	cmd.ExtraFiles = []*os.File{theirs} // fd 3
	mem, err := newShm()
	if p.cfg.NoShm {
		if err == nil {
			mem.close()
		}
		mem, err = nil, errors.New("off")
	}
	if err == nil {
		cmd.ExtraFiles = append(cmd.ExtraFiles, mem.f) // fd 4
		cmd.Env = append(cmd.Env[:len(cmd.Env):len(cmd.Env)], "PRAAS_WORKER_SHM_FD=4")
	} else if !p.cfg.NoShm {
		p.log.Warn("no shared memory for a worker: large payloads go through its socket", "err", err)
		mem = nil
	} else {
		mem = nil
	}
	// A worker must not outlive the runtime (its socket's end tells it
	// too, but a worker busy in a function would not notice).
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		conn.Close()
		if mem != nil {
			mem.close()
		}
		return nil, nil, fmt.Errorf("workers: start %s: %w", p.cfg.Command[0], err)
	}
	w := &worker{pool: p, cmd: cmd, conn: conn, r: newFrameReader(conn), exited: make(chan struct{}), shm: mem}
	w.w.w = conn
	go func() {
		err := cmd.Wait()
		w.status = "exited"
		if err != nil {
			w.status = err.Error()
		}
		close(w.exited)
	}()
	funcs, err := w.handshake()
	if err != nil {
		conn.Close()
		<-w.exited
		w.closeShm()
		return nil, nil, fmt.Errorf("workers: worker %s (%s): %w", p.cfg.Command[len(p.cfg.Command)-1], w.status, err)
	}
	return w, funcs, nil
}

// handshake reads the worker's hello and answers it.
func (w *worker) handshake() ([]Func, error) {
	f, err := w.r.next()
	if err != nil {
		return nil, fmt.Errorf("no hello: %w", err)
	}
	if f.typ == FrameError {
		return nil, fmt.Errorf("cannot start: %w", wire.DecodeError(wire.Frame{Meta: f.meta, Payload: f.payload}))
	}
	if f.typ != FrameHello {
		return nil, fmt.Errorf("%w: first frame of type %d, not hello", errMalformed, f.typ)
	}
	mr := wire.NewMetaReader(f.meta)
	version, _ := mr.U16("version"), mr.Str8("language")
	if err := mr.Done(); err != nil {
		return nil, err
	}
	if version != Version {
		w.w.write(FrameError, 0, wire.EncodeCode(errs.FailedPrecondition), []byte(fmt.Sprintf("worker protocol version %d; this runtime speaks %d", version, Version)))
		return nil, fmt.Errorf("%w: worker speaks protocol version %d, the runtime %d", errs.ErrFailedPrecondition, version, Version)
	}
	funcs, err := decodeFuncs(f.payload)
	if err != nil {
		return nil, err
	}
	var m wire.Meta
	if err := w.w.write(FrameWelcome, 0, m.U16(Version).Str8(w.pool.cfg.App).Str8(w.pool.cfg.PID).B, nil); err != nil {
		return nil, err
	}
	return funcs, nil
}

func decodeFuncs(b []byte) ([]Func, error) {
	mr := wire.NewMetaReader(b)
	n := int(mr.U16("function count"))
	funcs := make([]Func, 0, n)
	for range n {
		f := Func{Name: mr.Str8("function")}
		kind, count := mr.U8("trigger"), mr.U32("count")
		switch kind {
		case triggerNone:
		case triggerStandard:
			f.Trigger = process.Standard
		case triggerMultiSource:
			f.Trigger = process.MultiSourceTrigger
		case triggerBatch:
			f.Trigger = process.BatchTrigger
		default:
			return nil, fmt.Errorf("%w: function %q: trigger %d", errMalformed, f.Name, kind)
		}
		if (f.Trigger == process.MultiSourceTrigger || f.Trigger == process.BatchTrigger) && (count < 1 || count > 1<<20) {
			return nil, fmt.Errorf("%w: function %q: trigger count %d", errMalformed, f.Name, count)
		}
		f.N = int(count)
		funcs = append(funcs, f)
	}
	if err := mr.Done(); err != nil {
		return nil, err
	}
	slices.SortFunc(funcs, func(a, b Func) int { return cmp.Compare(a.Name, b.Name) })
	return funcs, nil
}

// run makes w a member of the pool and starts reading it.
func (p *Pool) run(w *worker) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		w.conn.Close()
		return
	}
	p.workers[w] = struct{}{}
	p.wg.Add(1)
	p.mu.Unlock()
	go func() {
		defer p.wg.Done()
		w.read()
	}()
}

// replace starts a worker in place of old (nil: a new one), retrying with
// a growing pause while workers fail to start, until the pool closes.
func (p *Pool) replace(old *worker) {
	pause := 50 * time.Millisecond
	for {
		w, funcs, err := p.spawn()
		if err == nil {
			if !slices.Equal(funcs, p.funcs) {
				p.log.Warn("a restarted worker serves other functions than the first; the first's are kept", "command", p.cfg.Command)
			}
			p.run(w)
			return
		}
		p.log.Error("worker did not start", "err", err, "retry_in", pause)
		select {
		case <-p.stop:
			return
		case <-time.After(pause):
		}
		pause = min(2*pause, 5*time.Second)
	}
}

// read serves w's frames until its socket ends, then fails the invocation
// it ran and starts a new worker in its place.
func (w *worker) read() {
	err := w.serve() // never nil: it returns when the socket ends
	w.conn.Close()
	broken := !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed)
	if broken {
		// It broke the protocol (or its socket failed): it may go on
		// running, so it is killed rather than waited for.
		w.cmd.Process.Kill()
	}
	select {
	case <-w.exited:
	case <-time.After(time.Second): // a closed socket ends a well-behaved worker at once
		w.cmd.Process.Kill()
		<-w.exited
	}
	w.closeShm()
	p := w.pool
	w.mu.Lock()
	inv := w.cur
	w.cur, w.ready = nil, false
	w.mu.Unlock()
	p.mu.Lock()
	delete(p.workers, w)
	closed := p.closed
	p.mu.Unlock()
	if inv != nil {
		why := w.status
		if broken {
			why += "; " + err.Error()
		}
		inv.done <- outcome{err: fmt.Errorf("%w: function %q: its worker (pid %d) ended while running it (%s); the worker is restarted, the process state is as the function left it",
			errs.ErrFunctionFailed, inv.fn, w.cmd.Process.Pid, why)}
	}
	if closed {
		return
	}
	p.log.Warn("worker ended; starting another", "pid", w.cmd.Process.Pid, "status", w.status, "err", err)
	p.replace(w)
}

func (w *worker) serve() error {
	for {
		f, err := w.r.next()
		if err != nil {
			return err
		}
		switch f.typ {
		case FrameNext:
			if err := w.markReady(); err != nil {
				return err
			}
		case FrameResult, FrameError:
			w.mu.Lock()
			inv := w.cur
			if inv == nil || inv.id != f.id {
				w.mu.Unlock()
				return fmt.Errorf("%w: result for invocation %d, which it does not run", errMalformed, f.id)
			}
			w.cur = nil
			w.mu.Unlock()
			var o outcome
			switch {
			case f.typ == FrameResult && f.flags&FlagShm != 0:
				out, err := w.shmResult(f.payload)
				if err != nil {
					inv.done <- outcome{err: fmt.Errorf("%w: worker: %v", errs.ErrInternal, err)}
					return err
				}
				o.out = out
			case f.typ == FrameResult:
				o.out = f.payload
			default:
				o.err = wire.DecodeError(wire.Frame{Meta: f.meta, Payload: f.payload})
			}
			// Ready again before the caller learns the outcome, so that
			// its next invocation finds the worker free.
			if f.flags&FlagNext != 0 {
				if err := w.markReady(); err != nil {
					inv.done <- o
					return err
				}
			}
			inv.done <- o
		case FrameCall:
			w.call(f)
		default:
			return fmt.Errorf("%w: unexpected frame type %d from a worker", errMalformed, f.typ)
		}
	}
}

// markReady puts the worker, which asked for an invocation, in the pool.
func (w *worker) markReady() error {
	w.mu.Lock()
	if w.cur != nil || w.ready {
		w.mu.Unlock()
		return fmt.Errorf("%w: next while it has an invocation or asked already", errMalformed)
	}
	w.ready = true
	w.mu.Unlock()
	w.pool.idle <- w // never blocks: it has room for every worker
	return nil
}

// Handler returns the handler that runs function name on a worker.
func (p *Pool) Handler(name string) process.Handler {
	return func(ctx context.Context, proc *process.Process, input []byte) ([]byte, error) {
		w, err := p.take(ctx)
		if err != nil {
			return nil, err
		}
		inv := &invocation{id: p.nextID.Add(1), ctx: ctx, proc: proc, fn: name, done: make(chan outcome, 1)}
		meta, payload, triggered := encodeInvoke(ctx, name, input)
		var flags uint8
		w.mu.Lock()
		if len(payload) >= shmMin && !triggered && w.shm != nil && w.shm.ensure(len(payload)) == nil {
			// The worker is idle: the memory is the runtime's until the Invoke leaves.
			copy(w.shm.mem, payload)
			flags, payload = FlagShm, shmLen(len(payload))
		}
		w.cur, w.ready = inv, false
		w.mu.Unlock()
		if err := w.w.writeFlags(FrameInvoke, flags, inv.id, meta, payload); err != nil {
			// The reader sees the socket end and fails inv.
			w.conn.Close()
		}
		select {
		case o := <-inv.done:
			return o.out, o.err
		case <-ctx.Done():
			// The worker goes on; its result is dropped.
			return nil, ctx.Err()
		}
	}
}

// take returns a worker that asked for an invocation, waiting for one.
func (p *Pool) take(ctx context.Context) (*worker, error) {
	blocked := false
	for {
		var w *worker
		select {
		case w = <-p.idle:
		default:
			if !blocked {
				// Let the connection serve others while this waits.
				process.Blocking(ctx)
				blocked = true
			}
			select {
			case w = <-p.idle:
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-p.stop:
				return nil, fmt.Errorf("%w: the workers are stopping", errs.ErrUnavailable)
			}
		}
		w.mu.Lock()
		ok := w.ready && w.cur == nil
		w.mu.Unlock()
		if ok {
			return w, nil
		}
		// It ended since it asked.
	}
}

// shmResult copies a result out of the shared memory.
func (w *worker) shmResult(payload []byte) ([]byte, error) {
	n, err := readShmLen(payload)
	if err != nil {
		return nil, err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.shm == nil {
		return nil, fmt.Errorf("%w: a result in shared memory, but there is none", errMalformed)
	}
	if err := w.shm.sync(n); err != nil {
		return nil, err
	}
	return append([]byte(nil), w.shm.mem[:n]...), nil
}

// closeShm unmaps the shared memory once the worker has ended.
func (w *worker) closeShm() {
	w.mu.Lock()
	m := w.shm
	w.shm = nil
	w.mu.Unlock()
	if m != nil {
		m.close()
	}
}

func encodeInvoke(ctx context.Context, name string, input []byte) (meta, payload []byte, triggered bool) {
	key, msgs, ok := process.Triggered(ctx)
	m := wire.Meta{B: make([]byte, 0, 8+len(name))}
	m.Str8(name)
	if !ok {
		return m.U8(0).B, input, false
	}
	m.U8(1).Str16(key).U32(uint32(len(msgs)))
	n := 0
	for _, msg := range msgs {
		n += 1 + len(msg.Src) + 2 + len(msg.Key) + 4 + len(msg.Data)
	}
	pl := wire.Meta{B: make([]byte, 0, n)}
	for _, msg := range msgs {
		pl.Str8(msg.Src).Str16(msg.Key).U32(uint32(len(msg.Data)))
		pl.B = append(pl.B, msg.Data...)
	}
	return m.B, pl.B, true
}

// call serves a worker's call. State calls are answered at once; those
// that may wait (send, recv, invoke) each get a goroutine, so a worker may
// have several under way.
func (w *worker) call(f frame) {
	w.mu.Lock()
	inv := w.cur
	w.mu.Unlock()
	mr := wire.NewMetaReader(f.meta)
	op := mr.U8("op")
	if inv == nil {
		w.replyErr(f.id, fmt.Errorf("%w: a call outside an invocation", errs.ErrFailedPrecondition))
		return
	}
	ctx, proc := inv.ctx, inv.proc
	switch op {
	case OpGet:
		key := mr.Str16("key")
		if err := mr.Done(); err != nil {
			w.replyErr(f.id, err)
			return
		}
		v, ok := proc.State(key)
		found := []byte{0}
		if ok {
			found[0] = 1
		}
		w.reply(f.id, found, v)
	case OpSet:
		key := mr.Str16("key")
		if err := mr.Done(); err != nil {
			w.replyErr(f.id, err)
			return
		}
		// The payload is this call's own buffer: the state keeps it.
		w.result(f.id, nil, nil, proc.SetState(key, f.payload))
	case OpDelete:
		key := mr.Str16("key")
		if err := mr.Done(); err != nil {
			w.replyErr(f.id, err)
			return
		}
		proc.DeleteState(key)
		w.reply(f.id, nil, nil)
	case OpKeys:
		keys := proc.StateKeys()
		var m wire.Meta
		m.U32(uint32(len(keys)))
		for _, k := range keys {
			m.Str16(k)
		}
		w.reply(f.id, nil, m.B)
	case OpMembers:
		b, err := json.Marshal(proc.Members())
		w.result(f.id, nil, b, err)
	case OpSend:
		dest, key := mr.Str8("dest"), mr.Str16("key")
		if err := mr.Done(); err != nil {
			w.replyErr(f.id, err)
			return
		}
		go func() { w.result(f.id, nil, nil, proc.Send(ctx, dest, key, f.payload)) }()
	case OpRecv:
		src, key, ms := mr.Str8("source"), mr.Str16("key"), mr.U64("timeout")
		if err := mr.Done(); err != nil {
			w.replyErr(f.id, err)
			return
		}
		timeout := time.Duration(min(ms, uint64(365*24*time.Hour/time.Millisecond))) * time.Millisecond
		go func() {
			msg, err := proc.Recv(ctx, src, key, timeout)
			var m wire.Meta
			if err == nil {
				m.Str8(msg.Src).Str16(msg.Key)
			}
			w.result(f.id, m.B, msg.Data, err)
		}()
	case OpInvoke:
		dest, fn := mr.Str8("dest"), mr.Str8("function")
		if err := mr.Done(); err != nil {
			w.replyErr(f.id, err)
			return
		}
		go func() {
			out, err := proc.Invoke(ctx, dest, fn, f.payload)
			w.result(f.id, nil, out, err)
		}()
	default:
		w.replyErr(f.id, fmt.Errorf("%w: unknown call op %d", errs.ErrInvalidArgument, op))
	}
}

func (w *worker) result(id uint64, meta, payload []byte, err error) {
	if err != nil {
		w.replyErr(id, err)
		return
	}
	w.reply(id, meta, payload)
}

func (w *worker) reply(id uint64, meta, payload []byte) {
	if err := w.w.write(FrameReply, id, meta, payload); err != nil {
		w.conn.Close()
	}
}

func (w *worker) replyErr(id uint64, err error) {
	code := errs.CodeOf(err)
	if code == errs.Unknown {
		code = errs.Internal
	}
	if errors.Is(err, errMalformed) {
		code = errs.InvalidArgument
	}
	if err := w.w.write(FrameError, id, wire.EncodeCode(code), []byte(err.Error())); err != nil {
		w.conn.Close()
	}
}
