package local

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/praas-dev/praas/backend"
	"github.com/praas-dev/praas/errs"
)

// uidsDir holds, per app, the uid the app's processes run as: RunDir/uids/APP
// holds the number. Backends sharing RunDir share it, so an app keeps its
// uid across replicas and restarts.
const uidsDir = "uids"

// appUID returns the uid of app, giving it the lowest free one on first use.
func (b *Backend) appUID(app string) (uint32, error) {
	b.mu.Lock()
	uid, ok := b.uids[app]
	b.mu.Unlock()
	if ok {
		return uid, nil
	}
	dir := filepath.Join(b.cfg.RunDir, uidsDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return 0, err
	}
	// Other backends sharing RunDir allocate too: one at a time.
	d, err := os.Open(dir)
	if err != nil {
		return 0, err
	}
	defer d.Close()
	if err := unix.Flock(int(d.Fd()), unix.LOCK_EX); err != nil {
		return 0, fmt.Errorf("lock %s: %w", dir, err)
	}
	defer unix.Flock(int(d.Fd()), unix.LOCK_UN)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	used := make(map[uint32]bool)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), tmpPrefix) {
			continue
		}
		n, err := b.readUID(filepath.Join(dir, e.Name()))
		if err != nil {
			return 0, err
		}
		if e.Name() == app {
			b.mu.Lock()
			b.uids[app] = n
			b.mu.Unlock()
			return n, nil
		}
		used[n] = true
	}
	s := b.sb
	for off := uint32(1); off < s.count; off++ {
		if uid := s.first + off; !used[uid] {
			if err := writeFileAtomic(dir, app, []byte(strconv.FormatUint(uint64(uid), 10)+"\n")); err != nil {
				return 0, err
			}
			b.mu.Lock()
			b.uids[app] = uid
			b.mu.Unlock()
			return uid, nil
		}
	}
	return 0, fmt.Errorf("%w: all %d uids of the isolation range are taken by apps", errs.ErrResourceExhausted, s.count-1)
}

func (b *Backend) readUID(path string) (uint32, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(data)), 10, 32)
	if err != nil || uint32(n) <= b.sb.first || uint32(n)-b.sb.first >= b.sb.count {
		return 0, fmt.Errorf("%s: %q is not a uid of the isolation range %d-%d (was the range changed? then remove %s)",
			path, strings.TrimSpace(string(data)), b.sb.first+1, b.sb.first+b.sb.count-1, filepath.Dir(path))
	}
	return uint32(n), nil
}

// writeFileAtomic writes dir/name through a temporary file, mode 0600.
func writeFileAtomic(dir, name string, data []byte) error {
	f, err := os.CreateTemp(dir, tmpPrefix+"*")
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), filepath.Join(dir, name))
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}

// fileKey tells versions of a file apart without reading it.
type fileKey struct {
	dev, ino    uint64
	size        int64
	mtime, ctim int64
}

func keyOf(fi os.FileInfo) fileKey {
	st := fi.Sys().(*syscall.Stat_t)
	return fileKey{uint64(st.Dev), st.Ino, fi.Size(), st.Mtim.Nano(), st.Ctim.Nano()}
}

// image returns the sandbox's copy of the image binary at path: root's,
// mode 0555, named after its SHA-256 (SandboxDir/images/SHA256/NAME), so
// every sandbox user can run it wherever the original lives and whatever
// later happens to the original. A copy is made once per content.
func (b *Backend) image(path string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	key := keyOf(fi)
	b.mu.Lock()
	sum, ok := b.imageSums[path]
	b.mu.Unlock()
	if !ok || sum.key != key {
		f, err := os.Open(path)
		if err != nil {
			return "", err
		}
		h := sha256.New()
		_, err = io.Copy(h, f)
		f.Close()
		if err != nil {
			return "", err
		}
		sum = imageSum{key, hex.EncodeToString(h.Sum(nil))}
		b.mu.Lock()
		b.imageSums[path] = sum
		b.mu.Unlock()
	}
	dir := filepath.Join(b.sb.imagesDir(), sum.sha)
	copyPath := filepath.Join(dir, filepath.Base(path))
	now := time.Now()
	if os.Chtimes(dir, now, now) == nil { // keeps it from being pruned
		if _, err := os.Stat(copyPath); err == nil {
			return copyPath, nil
		}
	}
	return b.copyImage(path, sum.sha, copyPath)
}

// copyImage copies path to copyPath, checking on the way that it is still
// the content named sha.
func (b *Backend) copyImage(path, sha, copyPath string) (string, error) {
	dir := filepath.Dir(copyPath)
	if err := os.Mkdir(dir, 0o711); err != nil && !errors.Is(err, fs.ErrExist) {
		return "", err
	}
	if err := os.Chmod(dir, 0o711); err != nil {
		return "", err
	}
	src, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer src.Close()
	dst, err := os.CreateTemp(dir, tmpPrefix+"*")
	if err != nil {
		return "", err
	}
	defer os.Remove(dst.Name()) // after the rename, a no-op
	h := sha256.New()
	_, err = io.Copy(io.MultiWriter(dst, h), src)
	if err == nil {
		err = dst.Chmod(0o555)
	}
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", fmt.Errorf("copy image %s: %w", path, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != sha {
		b.mu.Lock()
		delete(b.imageSums, path)
		b.mu.Unlock()
		return "", fmt.Errorf("%w: image %s changed while it was copied; try again", errs.ErrUnavailable, path)
	}
	if err := os.Rename(dst.Name(), copyPath); err != nil {
		return "", err
	}
	return copyPath, nil
}

// keepImages is how long an image copy no process started from stays.
const keepImages = 7 * 24 * time.Hour

// pruneImages removes image copies no process was started from for
// keepImages. Processes still running from one are not disturbed: a
// running binary, and a bind mount of one, outlive its name.
func (b *Backend) pruneImages() {
	ents, err := os.ReadDir(b.sb.imagesDir())
	if err != nil {
		return
	}
	for _, e := range ents {
		if fi, err := e.Info(); err == nil && time.Since(fi.ModTime()) > keepImages {
			os.RemoveAll(filepath.Join(b.sb.imagesDir(), e.Name()))
		}
	}
}

// newScratch creates a private scratch directory for a process of uid:
// SandboxDir/scratch/RUNKEY/RANDOM, mode 0700, owned by uid. RUNKEY names
// the RunDir, so control planes sharing SandboxDir keep apart; the name is
// random, so no later process of the same pid ever gets it.
func (b *Backend) newScratch(uid uint32) (string, error) {
	var r [12]byte
	rand.Read(r[:])
	dir := filepath.Join(b.scratch, hex.EncodeToString(r[:]))
	err := os.Mkdir(dir, 0o700)
	if errors.Is(err, fs.ErrNotExist) {
		// Another control plane pruned b.scratch while it was empty.
		if err = b.makeScratchParent(); err == nil {
			err = os.Mkdir(dir, 0o700)
		}
	}
	if err != nil {
		return "", err
	}
	if err := os.Chown(dir, int(uid), int(uid)); err != nil {
		os.Remove(dir)
		return "", err
	}
	return dir, nil
}

// makeScratchParent creates b.scratch, root's, mode 0711.
func (b *Backend) makeScratchParent() error {
	if err := os.Mkdir(b.scratch, 0o711); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return os.Chmod(b.scratch, 0o711)
}

// removeScratch removes a scratch directory of an ended process. It is the
// sandbox user's: RemoveAll never follows a symlink it left there.
func (b *Backend) removeScratch(dir string) {
	if dir == "" || b.sb == nil || filepath.Dir(dir) != b.scratch {
		return // not one of ours: never remove what a record names elsewhere
	}
	if err := os.RemoveAll(dir); err != nil {
		b.cfg.Logger.Warn("remove scratch directory", "dir", dir, "err", err)
	}
}

// pruneScratchParents removes the empty scratch directories of other
// RunDirs that none used for a day: RunDirs come and go (tests make one
// each). A Start that loses its directory to this makes it again.
func (b *Backend) pruneScratchParents() {
	ents, _ := os.ReadDir(b.sb.scratchDir())
	for _, e := range ents {
		path := filepath.Join(b.sb.scratchDir(), e.Name())
		if fi, err := e.Info(); err == nil && path != b.scratch && time.Since(fi.ModTime()) > 24*time.Hour {
			os.Remove(path) // fails unless empty
		}
	}
}

// sweepScratch removes scratch directories of this RunDir that no live
// process uses: a control plane that crashed between creating one and
// recording its process leaves them behind. Recent ones may belong to a
// Start in progress elsewhere and stay.
func (b *Backend) sweepScratch(live []record) {
	used := make(map[string]bool)
	for _, r := range live {
		used[r.Scratch] = true
	}
	ents, _ := os.ReadDir(b.scratch)
	for _, e := range ents {
		path := filepath.Join(b.scratch, e.Name())
		if fi, err := e.Info(); err == nil && !used[path] && time.Since(fi.ModTime()) > time.Minute {
			b.removeScratch(path)
		}
	}
}

// launch is a process about to start.
type launch struct {
	cmd     *exec.Cmd
	uid     uint32
	scratch string
	// info is where bubblewrap tells the runtime's pid, and args holds
	// bubblewrap's arguments (namespaces).
	info *pipe
	args *os.File
}

type pipe struct{ r, w *os.File }

// sandboxed prepares the start of image with args for spec: as the app's
// uid with a new scratch directory, and in the namespaces mode through
// bubblewrap.
func (b *Backend) sandboxed(spec backend.Spec, image string, args []string) (l launch, err error) {
	// A child inherits every descriptor not marked close-on-exec: Go marks
	// its own, but the control plane may have inherited some (from its
	// shell, its service manager) that no sandbox should get.
	closeOnExec()
	if l.uid, err = b.appUID(spec.App); err != nil {
		return l, err
	}
	img, err := b.image(image)
	if err != nil {
		return l, fmt.Errorf("image: %w", err)
	}
	var modHost, modInside string
	if m := pythonModule(spec.Image); m != "" {
		if modHost, modInside, err = b.sandboxModule(m, b.sb.mode != IsolationUser); err != nil {
			return l, err
		}
		args = pythonArgs(args[:len(args)-2], modInside) // in place of the host's path
	}
	if l.scratch, err = b.newScratch(l.uid); err != nil {
		return l, fmt.Errorf("scratch directory: %w", err)
	}
	sys := &syscall.SysProcAttr{Setpgid: true, Credential: credential(l.uid)}
	if b.sb.mode == IsolationUser {
		l.cmd = exec.Command(img, args...)
		l.cmd.Dir = l.scratch
		l.cmd.Env = slices.Concat(baseEnv, []string{"HOME=" + l.scratch, "TMPDIR=" + l.scratch}, spec.Env, spec.Secrets)
		l.cmd.SysProcAttr = sys
		return l, nil
	}
	// bubblewrap's own arguments and environment are for all to see in
	// /proc: the runtime's environment, secrets included, and the paths
	// go through a memfd instead, and bubblewrap's environment is empty.
	inside := path.Join(sandboxImageDir, filepath.Base(img))
	bargs := append(b.sb.bwrapArgs(3), // ExtraFiles[0]
		"--bind", l.scratch, "/tmp", "--chdir", "/tmp",
		"--ro-bind", img, inside)
	if modHost != "" {
		bargs = append(bargs, "--ro-bind", modHost, modInside)
	}
	bargs = append(bargs, "--clearenv")
	for _, kv := range slices.Concat(baseEnv, spec.Env, spec.Secrets) { // HOME=/tmp
		if k, v, ok := strings.Cut(kv, "="); ok && k != "" {
			bargs = append(bargs, "--setenv", k, v) // the last one wins
		}
	}
	argsFile, err := memfile("bwrap-args", []byte(strings.Join(bargs, "\x00")+"\x00"))
	if err != nil {
		b.removeScratch(l.scratch)
		return l, err
	}
	r, w, err := os.Pipe()
	if err != nil {
		argsFile.Close()
		b.removeScratch(l.scratch)
		return l, err
	}
	l.cmd = exec.Command(b.sb.bwrap, append([]string{"--args", "4", "--", inside}, args...)...)
	l.cmd.Dir = "/"
	l.cmd.Env = []string{}
	l.cmd.ExtraFiles = []*os.File{w, argsFile}
	l.cmd.SysProcAttr = sys
	l.info = &pipe{r, w}
	l.args = argsFile
	return l, nil
}

// closeOnExec marks every descriptor above stderr close-on-exec. The
// children's ones are set up after the fork, by exec.Cmd, unaffected.
func closeOnExec() {
	if unix.CloseRange(3, math.MaxUint32, unix.CLOSE_RANGE_CLOEXEC) == nil {
		return
	}
	ents, _ := os.ReadDir("/proc/self/fd") // before Linux 5.11
	for _, e := range ents {
		if fd, err := strconv.Atoi(e.Name()); err == nil && fd > 2 {
			unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC)
		}
	}
}

// memfile returns a file that holds data only in memory, read from its
// start.
func memfile(name string, data []byte) (*os.File, error) {
	fd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("memfd: %w", err)
	}
	f := os.NewFile(uintptr(fd), name)
	if _, err := f.Write(data); err != nil {
		f.Close()
		return nil, err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// sandboxStartWait bounds how long bubblewrap may take to set a sandbox up.
const sandboxStartWait = 30 * time.Second

// sandboxRuntime reads from bubblewrap's info pipe the pid of the runtime it
// started for sandbox (bubblewrap's own pid) and returns the runtime's
// ident, with start 0 if it has already ended. The runtime is bubblewrap's
// child, and bubblewrap is not reaped yet: a process with that pid whose
// parent is sandbox is the runtime, not a stranger that reused its pid.
func sandboxRuntime(ctx context.Context, r *os.File, sandbox int) (ident, error) {
	r.SetReadDeadline(time.Now().Add(sandboxStartWait))
	stop := context.AfterFunc(ctx, func() { r.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	var info struct {
		ChildPID int `json:"child-pid"`
	}
	if err := json.NewDecoder(r).Decode(&info); err != nil || info.ChildPID <= 1 {
		if ctx.Err() != nil {
			return ident{}, ctx.Err()
		}
		return ident{}, fmt.Errorf("bubblewrap did not set the sandbox up (its error is in the process's log): %v", err)
	}
	st, err := readStat(info.ChildPID)
	if err != nil || st.ppid != sandbox || st.state == 'Z' || st.state == 'X' {
		return ident{info.ChildPID, 0}, nil
	}
	return ident{info.ChildPID, st.start}, nil
}

// catches reports whether pid handles or ignores sig, rather than leaving
// it to its default action. It says yes when it cannot tell.
//
// A sandboxed runtime is pid 1 of its namespace, and the kernel drops a
// signal sent to pid 1 that pid 1 leaves to the default action (SIGKILL
// excepted): SIGTERM would not end a runtime without a handler, as it
// would anywhere else, nor bubblewrap still setting the sandbox up. Go
// installs its handlers before any code of the image runs.
func catches(pid int, sig unix.Signal) bool {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return true
	}
	var mask uint64
	for line := range strings.Lines(string(data)) {
		k, v, _ := strings.Cut(strings.TrimSpace(line), ":")
		if k == "SigCgt" || k == "SigIgn" {
			m, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				return true
			}
			mask |= m
		}
	}
	return mask&(1<<(uint(sig)-1)) != 0
}

// killProc kills id if it still runs, and waits a little for it to end.
func killProc(id ident) {
	f, ok, err := openPidfd(id)
	if err != nil || !ok {
		return
	}
	defer f.Close()
	if ended, err := signalPidfd(f, unix.SIGKILL); ended || err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), killWait)
	defer cancel()
	waitPidfd(ctx, f)
}

// sandboxExit translates bubblewrap's exit status: it reports a runtime
// killed by signal N as status 128+N, the shell's way. A runtime that
// exits with such a status itself is reported as killed too.
func sandboxExit(e backend.Exit) backend.Exit {
	if e.Code > 128 && e.Code <= 128+64 {
		e.Code, e.Reason = -1, "signal: "+syscall.Signal(e.Code-128).String()
	}
	return e
}
