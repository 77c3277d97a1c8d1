package controlplane

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/praas-dev/praas/errs"
	"github.com/praas-dev/praas/internal/cpapi"
	"github.com/praas-dev/praas/internal/names"
	"github.com/praas-dev/praas/internal/proclog"
)

// Process logs. A runtime ships the lines it captured from its stdout and
// stderr to the replica it reports to (POST cpapi.PathLogs); that replica
// appends them to LogDir/APP/PID.log in the text format of
// proclog.AppendText, rotating it to PID.log.1 past MaxLogBytes, and to a
// ring in memory from which followers of the log read new lines as they
// come. Reads (GET /v1/apps/{app}/processes/{pid}/logs) go to the replica
// that owns the process, whose files hold its lines.

// DefaultMaxLogBytes is the default size at which a process log file is
// rotated (one older file is kept, so a process's log takes at most twice
// this on disk).
const DefaultMaxLogBytes = 16 << 20

// Bounds of the ring a replica keeps per process for followers: what a
// follower may fall behind by. Small, since a replica may own thousands of
// processes; history comes from the files.
const (
	followRingLines = 512
	followRingBytes = 64 << 10
)

// logIdle is how long a process's ring stays in memory without new lines
// or followers.
const logIdle = 10 * time.Minute

// maxLogTail bounds the tail parameter of a read.
const maxLogTail = 100000

// logStore keeps the process logs this replica received.
//
// Lock order: logStore.mu, then a procLog's mu.
type logStore struct {
	dir      string // "": in memory only
	maxBytes int64

	mu    sync.Mutex
	procs map[string]*procLog // app/pid
}

// procLog is the log of one process on this replica.
type procLog struct {
	app, pid string
	ring     *proclog.Ring

	// mu orders appends (file and ring together) against the snapshot a
	// reader takes of both; evicted is set under it.
	mu         sync.Mutex
	evicted    bool
	lastAppend time.Time
	followers  int // under logStore.mu
}

func newLogStore(dir string, maxBytes int64) *logStore {
	return &logStore{dir: dir, maxBytes: maxBytes, procs: make(map[string]*procLog)}
}

// get returns the log of app/pid, made if needed; follow counts a
// follower in, whom the caller lets go with unfollow.
func (ls *logStore) get(app, pid string, follow bool) *procLog {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	key := liveKey(app, pid)
	pl := ls.procs[key]
	if pl == nil {
		pl = &procLog{app: app, pid: pid, ring: proclog.NewRing(followRingLines, followRingBytes), lastAppend: time.Now()}
		ls.procs[key] = pl
	}
	if follow {
		pl.followers++
	}
	return pl
}

func (ls *logStore) unfollow(pl *procLog) {
	ls.mu.Lock()
	pl.followers--
	ls.mu.Unlock()
}

// evictIdle forgets the rings of processes without new lines or followers
// for logIdle; their files stay.
func (ls *logStore) evictIdle(now time.Time) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	for key, pl := range ls.procs {
		pl.mu.Lock()
		if pl.followers == 0 && now.Sub(pl.lastAppend) > logIdle {
			pl.evicted = true
			delete(ls.procs, key)
		}
		pl.mu.Unlock()
	}
}

// paths returns the current and the rotated log file of app/pid.
func (ls *logStore) paths(app, pid string) (current, old string) {
	current = filepath.Join(ls.dir, app, pid+".log")
	return current, current + ".1"
}

// append adds lines to the log of app/pid: its file and its ring.
func (ls *logStore) append(app, pid string, lines []proclog.Line) error {
	for {
		pl := ls.get(app, pid, false)
		pl.mu.Lock()
		if pl.evicted {
			pl.mu.Unlock()
			continue // evicted meanwhile: a new one is in the map
		}
		err := ls.write(pl, lines)
		pl.ring.Append(lines...)
		pl.lastAppend = time.Now()
		pl.mu.Unlock()
		return err
	}
}

// write appends lines to the file of pl, rotating it first if they would
// take it past maxBytes. pl.mu is held.
func (ls *logStore) write(pl *procLog, lines []proclog.Line) error {
	if ls.dir == "" {
		return nil
	}
	var text []byte
	for _, l := range lines {
		text = proclog.AppendText(text, l)
	}
	current, old := ls.paths(pl.app, pl.pid)
	if err := os.MkdirAll(filepath.Dir(current), 0o700); err != nil {
		return err
	}
	if fi, err := os.Stat(current); err == nil && fi.Size() > 0 && fi.Size()+int64(len(text)) > ls.maxBytes {
		if err := os.Rename(current, old); err != nil {
			return fmt.Errorf("rotate log: %w", err)
		}
	}
	f, err := os.OpenFile(current, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(text)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// logFile is a file of a log opened for reading, and how much of it
// belonged to the log when it was opened.
type logFile struct {
	f    *os.File
	size int64
}

// snapshot opens the files of pl and notes the ring's next sequence
// number at once, so the files hold exactly the lines before it. The
// caller closes the files.
func (ls *logStore) snapshot(pl *procLog) (files []logFile, next uint64, err error) {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	next = pl.ring.Next()
	if ls.dir == "" {
		return nil, next, nil
	}
	current, old := ls.paths(pl.app, pl.pid)
	for _, path := range []string{old, current} {
		f, err := os.Open(path)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err == nil {
			var fi os.FileInfo
			if fi, err = f.Stat(); err == nil {
				files = append(files, logFile{f, fi.Size()})
				continue
			}
			f.Close()
		}
		for _, lf := range files {
			lf.f.Close()
		}
		return nil, 0, err
	}
	return files, next, nil
}

// logQuery is what a read of a log asks for.
type logQuery struct {
	since  time.Time // zero: from the start
	tail   int       // 0: every line
	follow bool
	text   bool
}

func parseLogQuery(r *http.Request, now time.Time) (logQuery, error) {
	q := r.URL.Query()
	var lq logQuery
	if v := q.Get("since"); v != "" {
		if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
			lq.since = t
		} else if d, err := time.ParseDuration(v); err == nil && d >= 0 {
			lq.since = now.Add(-d)
		} else {
			return lq, fmt.Errorf("%w: since=%q: an RFC 3339 time or a duration such as 10m", errs.ErrInvalidArgument, v)
		}
	}
	if v := q.Get("tail"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > maxLogTail {
			return lq, fmt.Errorf("%w: tail=%q: a number of lines from 0 to %d", errs.ErrInvalidArgument, v, maxLogTail)
		}
		lq.tail = n
	}
	if v := q.Get("follow"); v != "" {
		f, err := strconv.ParseBool(v)
		if err != nil {
			return lq, fmt.Errorf("%w: follow=%q: true or false", errs.ErrInvalidArgument, v)
		}
		lq.follow = f
	}
	switch format := q.Get("format"); format {
	case "json":
	case "text":
		lq.text = true
	case "":
		lq.text = strings.HasPrefix(r.Header.Get("Accept"), "text/plain")
	default:
		return lq, fmt.Errorf("%w: format=%q: json or text", errs.ErrInvalidArgument, format)
	}
	return lq, nil
}

// processLogs serves GET /v1/apps/{app}/processes/{pid}/logs.
func (s *Server) processLogs(w http.ResponseWriter, r *http.Request) {
	lq, err := parseLogQuery(r, time.Now())
	if err != nil {
		writeError(w, s.log, err)
		return
	}
	_, rec, ok := s.process(w, r)
	if !ok {
		return
	}
	// The owner's files hold the log: read there.
	if rec.Owner != "" && rec.Owner != s.id && r.Header.Get(headerForwarded) == "" {
		if own, owner := s.ownerOf(r.Context(), rec); own == ownedByPeer && owner.URL != "" {
			s.forward(w, r, &errOwnedByPeer{rec: rec, owner: owner})
			return
		}
	}
	pl := s.logs.get(rec.App, rec.PID, lq.follow)
	if lq.follow {
		defer s.logs.unfollow(pl)
	}
	files, next, err := s.logs.snapshot(pl)
	if err != nil {
		writeError(w, s.log, fmt.Errorf("%w: read log: %v", errs.ErrInternal, err))
		return
	}
	lw := newLogWriter(w, lq.text)
	w.WriteHeader(http.StatusOK)
	if err := writeHistory(lw, files, pl, next, lq); err != nil {
		s.log.Warn("read log", "app", rec.App, "pid", rec.PID, "err", err)
		return
	}
	lw.flush()
	if !lq.follow || lw.err != nil {
		return
	}
	for {
		changed := pl.ring.Changed()
		lines, n, missed := pl.ring.Read(next, 0, 0)
		next = n
		if missed > 0 {
			lw.write(proclog.Line{Time: time.Now(), Stream: proclog.StreamPraas,
				Line: fmt.Sprintf("%d lines skipped: this reader fell behind", missed)})
		}
		for _, l := range lines {
			if !l.Time.Before(lq.since) {
				lw.write(l)
			}
		}
		lw.flush()
		if lw.err != nil {
			return
		}
		select {
		case <-r.Context().Done():
			return
		case <-s.stopping:
			return
		case <-changed:
		}
	}
}

// writeHistory writes the lines of files (or, without files, of the ring
// before next) that lq asks for, and closes the files.
func writeHistory(lw *logWriter, files []logFile, pl *procLog, next uint64, lq logQuery) error {
	// With a tail, the last lines are kept in a circular buffer until the
	// end; without, every line is written as it is read.
	var last []proclog.Line
	kept := 0
	keep := func(l proclog.Line) {
		switch {
		case l.Time.Before(lq.since):
		case lq.tail == 0:
			lw.write(l)
		case len(last) < lq.tail:
			last = append(last, l)
		default:
			last[kept%lq.tail] = l
			kept++
		}
	}
	var err error
	for _, lf := range files {
		if err == nil {
			err = scanLog(io.LimitReader(lf.f, lf.size), keep)
		}
		lf.f.Close()
	}
	if err != nil {
		return err
	}
	if files == nil {
		lines, end, _ := pl.ring.Read(0, 0, 0)
		first := end - uint64(len(lines))
		for i, l := range lines {
			if first+uint64(i) < next { // those after are followed
				keep(l)
			}
		}
	}
	for i := range last {
		lw.write(last[(kept+i)%len(last)])
	}
	return lw.err
}

// scanLog calls fn for every line of a log file; lines not in the text
// format are skipped.
func scanLog(r io.Reader, fn func(proclog.Line)) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4*proclog.MaxLine+256)
	for sc.Scan() {
		if l, err := proclog.ParseText(sc.Text()); err == nil {
			fn(l)
		}
	}
	return sc.Err()
}

// logWriter writes lines as JSON lines or text.
type logWriter struct {
	w     http.ResponseWriter
	text  bool
	enc   *json.Encoder
	buf   []byte
	err   error
	flush func()
}

func newLogWriter(w http.ResponseWriter, text bool) *logWriter {
	lw := &logWriter{w: w, text: text, enc: json.NewEncoder(w)}
	if text {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	} else {
		w.Header().Set("Content-Type", "application/x-ndjson")
	}
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	rc := http.NewResponseController(w)
	lw.flush = func() {
		if lw.err == nil {
			if err := rc.Flush(); err != nil && !errors.Is(err, http.ErrNotSupported) {
				lw.err = err
			}
		}
	}
	return lw
}

func (lw *logWriter) write(l proclog.Line) {
	if lw.err != nil {
		return
	}
	if lw.text {
		lw.buf = proclog.AppendText(lw.buf[:0], l)
		_, lw.err = lw.w.Write(lw.buf)
		return
	}
	lw.err = lw.enc.Encode(l)
}

// receiveLogs takes a batch of log lines from a runtime (cpapi.Logs). Any
// generation's credential may send its own lines, also after its swap-out
// or retirement: they are true output of the process, and nothing else
// depends on them.
func (s *Server) receiveLogs(w http.ResponseWriter, r *http.Request) {
	var msg cpapi.Logs
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, cpapi.MaxLogsBytes))
	if err := dec.Decode(&msg); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, s.log, fmt.Errorf("%w: log batch over %d bytes", errs.ErrTooLarge, cpapi.MaxLogsBytes))
		} else {
			writeError(w, s.log, fmt.Errorf("%w: bad JSON: %v", errs.ErrInvalidArgument, err))
		}
		return
	}
	if _, err := s.authInternal(r, msg.App, msg.PID, msg.Generation); err != nil {
		writeError(w, s.log, err)
		return
	}
	if err := errors.Join(names.App(msg.App), names.PID(msg.PID)); err != nil {
		writeError(w, s.log, err)
		return
	}
	if len(msg.Lines) > cpapi.MaxLogsBatch {
		writeError(w, s.log, fmt.Errorf("%w: %d log lines in one batch (at most %d)", errs.ErrTooLarge, len(msg.Lines), cpapi.MaxLogsBatch))
		return
	}
	now := time.Now()
	for i := range msg.Lines {
		msg.Lines[i] = cleanLine(msg.Lines[i], now)
	}
	if err := s.logs.append(msg.App, msg.PID, msg.Lines); err != nil {
		writeError(w, s.log, fmt.Errorf("%w: keep log lines: %v", errs.ErrInternal, err))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// cleanLine makes a line a runtime sent fit the text format: one line of
// at most proclog.MaxLine bytes, a known stream, a time.
func cleanLine(l proclog.Line, now time.Time) proclog.Line {
	switch l.Stream {
	case proclog.StreamStdout, proclog.StreamStderr, proclog.StreamPraas:
	default:
		l.Stream = proclog.StreamStderr
	}
	if len(l.Line) > proclog.MaxLine {
		l.Line = l.Line[:proclog.MaxLine]
	}
	if strings.ContainsAny(l.Line, "\r\n") {
		l.Line = strings.NewReplacer("\r", " ", "\n", " ").Replace(l.Line)
	}
	if l.Time.IsZero() {
		l.Time = now
	}
	return l
}

// evictLogs forgets idle processes' rings now and then.
func (s *Server) evictLogs(ctx context.Context) {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			s.logs.evictIdle(now)
		}
	}
}
