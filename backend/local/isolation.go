package local

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/praas-dev/praas/errs"
)

// Isolation is how far the processes of one app are kept from those of
// other apps and from the control plane.
type Isolation string

const (
	// IsolationAuto picks the strongest mode that works on this host.
	IsolationAuto Isolation = "auto"
	// IsolationNone runs processes as the control plane's own user: they
	// can read its files and each other's /proc/PID/environ. No isolation.
	IsolationNone Isolation = "none"
	// IsolationUser runs each app's processes as a uid (and gid) of its
	// own, without supplementary groups, with a private scratch directory
	// as HOME, TMPDIR and working directory. Needs root.
	IsolationUser Isolation = "user"
	// IsolationNamespaces is IsolationUser inside bubblewrap: new user,
	// mount, pid, ipc, uts and cgroup namespaces, where a process sees
	// /usr, a few files of /etc, its image, a new /proc and /dev, and its
	// scratch directory as /tmp. The network is shared. Needs root and bwrap.
	IsolationNamespaces Isolation = "namespaces"
)

// ParseIsolation parses the value of praas up --isolation.
func ParseIsolation(s string) (Isolation, error) {
	switch i := Isolation(s); i {
	case IsolationAuto, IsolationNone, IsolationUser, IsolationNamespaces:
		return i, nil
	case "":
		return IsolationAuto, nil
	}
	return "", fmt.Errorf("%w: isolation %q: want auto, none, user or namespaces", errs.ErrInvalidArgument, s)
}

// Defaults of the uid range and of the sandbox directory.
const (
	DefaultFirstUID   = 1_900_000_000
	DefaultUIDs       = 100_000
	DefaultSandboxDir = "/var/lib/praas-sandbox"
)

// ParseUIDRange parses "FIRST-LAST" (inclusive), as praas up
// --isolation-uids takes it, into Config.FirstUID and Config.UIDs.
func ParseUIDRange(s string) (first, count uint32, err error) {
	a, b, ok := strings.Cut(s, "-")
	lo, err1 := strconv.ParseUint(a, 10, 32)
	hi, err2 := strconv.ParseUint(b, 10, 32)
	if !ok || err1 != nil || err2 != nil || hi <= lo {
		return 0, 0, fmt.Errorf("%w: uid range %q: want FIRST-LAST, two uids with FIRST < LAST", errs.ErrInvalidArgument, s)
	}
	return uint32(lo), uint32(hi - lo + 1), nil
}

// sandbox is what the user and namespaces modes need, set up by New.
type sandbox struct {
	mode       Isolation
	first      uint32 // reserved for probing; app n gets first+n
	count      uint32
	dir        string // Config.SandboxDir
	bwrap      string // namespaces only
	noNestedNS bool   // bwrap knows --disable-userns
}

func (s *sandbox) imagesDir() string  { return filepath.Join(s.dir, "images") }
func (s *sandbox) scratchDir() string { return filepath.Join(s.dir, "scratch") }

// chooseIsolation sets up the mode cfg asks for, or for auto the strongest
// one that works. It returns the sandbox (nil for none) and a sentence for
// the operator that says what is in force and, if it is not the strongest
// mode, why.
func chooseIsolation(cfg *Config) (*sandbox, string, error) {
	mode := cfg.Isolation
	if mode == "" {
		mode = IsolationAuto
	}
	if _, err := ParseIsolation(string(mode)); err != nil {
		return nil, "", fmt.Errorf("local backend: %w", err)
	}
	none := func(why string) (*sandbox, string, error) {
		return nil, fmt.Sprintf("none: processes run as uid %d, the control plane's own, and can read its data directory and each other's environment (%s)", os.Geteuid(), why), nil
	}
	if mode == IsolationNone {
		return none("no isolation was asked for")
	}
	fail := func(err error) (*sandbox, string, error) {
		return nil, "", fmt.Errorf("local backend: isolation %s: %w", mode, err)
	}
	if os.Geteuid() != 0 {
		err := errors.New("the control plane does not run as root, so it cannot run processes as other users")
		if mode == IsolationAuto {
			return none(err.Error())
		}
		return fail(err)
	}
	s := &sandbox{mode: IsolationUser, first: cfg.FirstUID, count: cfg.UIDs, dir: cfg.SandboxDir}
	// A misconfiguration is an error even in auto mode: falling back to no
	// isolation would hide it.
	if err := s.checkUIDs(); err != nil {
		return fail(err)
	}
	if err := s.makeDirs(); err != nil {
		return fail(err)
	}
	if mode == IsolationUser {
		return s, s.describe(""), nil
	}
	why, err := s.probeBwrap(cfg.Bwrap)
	if err != nil {
		if mode == IsolationNamespaces {
			return fail(err)
		}
		return s, s.describe(err.Error()), nil
	}
	s.mode = IsolationNamespaces
	return s, s.describe(why), nil
}

func (s *sandbox) describe(why string) string {
	uids := fmt.Sprintf("uids %d-%d", s.first+1, s.first+s.count-1)
	if s.mode == IsolationNamespaces {
		return fmt.Sprintf("namespaces: each app's processes run as a uid of their own (%s) in bubblewrap (%s) with new user, mount, pid, ipc, uts and cgroup namespaces; they see /usr, a few files of /etc, their image and their own scratch directory as /tmp (under %s); the network is shared%s",
			uids, s.bwrap, s.dir, parens(why))
	}
	msg := fmt.Sprintf("user: each app's processes run as a uid of their own (%s) with a private scratch directory under %s; they see the host's file system as that uid and the other processes on the host, though not their environments", uids, s.dir)
	if why != "" {
		msg += "; namespaces are not available: " + why
	}
	return msg
}

func parens(s string) string {
	if s == "" {
		return ""
	}
	return " (" + s + ")"
}

// checkUIDs refuses a range that holds a uid or gid of this host's users
// and groups, or one delegated to rootless containers: those would share
// files, processes or namespaces with the apps.
func (s *sandbox) checkUIDs() error {
	if s.count < 2 || uint64(s.first)+uint64(s.count) > 1<<31 || s.first < 1000 {
		return fmt.Errorf("%w: uid range %d-%d: want at least two uids from 1000 to 2^31-1", errs.ErrInvalidArgument, s.first, uint64(s.first)+uint64(s.count)-1)
	}
	lo, hi := uint64(s.first), uint64(s.first)+uint64(s.count) // [lo, hi)
	overlap := func(a, n uint64) bool { return a < hi && lo < a+n }
	for _, f := range []struct {
		path string
		id   func(fields []string) (start, n uint64, ok bool)
	}{
		{"/etc/passwd", colonID(2, 7)},
		{"/etc/group", colonID(2, 4)},
		{"/etc/subuid", subID},
		{"/etc/subgid", subID},
	} {
		data, err := os.ReadFile(f.path)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		for line := range strings.Lines(string(data)) {
			line = strings.TrimSpace(line)
			if line == "" || line[0] == '#' {
				continue
			}
			if a, n, ok := f.id(strings.Split(line, ":")); ok && overlap(a, n) {
				return fmt.Errorf("%w: uid range %d-%d overlaps %s: %q; choose another range", errs.ErrInvalidArgument, lo, hi-1, f.path, line)
			}
		}
	}
	return nil
}

// colonID reads the id in field i of an /etc/passwd-like line with n fields.
func colonID(i, n int) func([]string) (uint64, uint64, bool) {
	return func(f []string) (uint64, uint64, bool) {
		if len(f) < n {
			return 0, 0, false
		}
		id, err := strconv.ParseUint(f[i], 10, 32)
		return id, 1, err == nil
	}
}

// subID reads an /etc/subuid line: name:start:count.
func subID(f []string) (uint64, uint64, bool) {
	if len(f) != 3 {
		return 0, 0, false
	}
	a, err1 := strconv.ParseUint(f[1], 10, 32)
	n, err2 := strconv.ParseUint(f[2], 10, 32)
	return a, n, err1 == nil && err2 == nil
}

// makeDirs creates the sandbox directory, its images and scratch
// directories, root's and mode 0711: sandbox users may reach what they are
// given by name but list nothing. Every directory above it must let others
// through, or no sandbox user could reach its image or scratch directory.
func (s *sandbox) makeDirs() error {
	if !filepath.IsAbs(s.dir) {
		return fmt.Errorf("%w: sandbox dir %q is not absolute", errs.ErrInvalidArgument, s.dir)
	}
	for _, d := range []string{s.dir, s.imagesDir(), s.scratchDir()} {
		if err := os.MkdirAll(d, 0o711); err != nil {
			return err
		}
		fi, err := os.Lstat(d)
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		if !fi.IsDir() || st.Uid != 0 {
			return fmt.Errorf("%s must be a directory owned by root", d)
		}
		if err := os.Chmod(d, 0o711); err != nil {
			return err
		}
	}
	for d := filepath.Dir(s.dir); ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return err
		}
		if fi.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("sandbox users cannot reach %s: %s is mode %v, without search permission for others; choose another sandbox directory", s.dir, d, fi.Mode().Perm())
		}
		if d == "/" {
			return nil
		}
	}
}

// credential makes a child run as uid (and the gid of the same number)
// with no supplementary groups.
func credential(uid uint32) *syscall.Credential {
	return &syscall.Credential{Uid: uid, Gid: uid, Groups: []uint32{}}
}

// hostDirs are the directories of / a sandbox sees, read-only (or as the
// same symlink as on the host).
var hostDirs = []string{"/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"}

// hostEtc are the files (and directories) of /etc a sandbox sees:
// name resolution, TLS roots, time zone. Nothing secret, and nothing a
// sandbox user could not read on the host either.
var hostEtc = []string{
	"/etc/hosts", "/etc/resolv.conf", "/etc/nsswitch.conf", "/etc/host.conf", "/etc/gai.conf",
	"/etc/services", "/etc/protocols", "/etc/localtime", "/etc/mime.types",
	"/etc/ssl", "/etc/ca-certificates", "/etc/pki", "/etc/ld.so.cache",
}

// sandboxImageDir is where the image appears inside a namespaces sandbox.
const sandboxImageDir = "/app"

// bwrapArgs returns bubblewrap's arguments up to the command: the
// namespaces and the file system every sandbox gets.
func (s *sandbox) bwrapArgs(infoFD int) []string {
	args := []string{
		"--unshare-user", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
		// The runtime is pid 1 of its namespace: it is the process the
		// backend signals, and its end ends the sandbox.
		"--as-pid-1",
		// No controlling terminal to push input into.
		"--new-session",
	}
	if s.noNestedNS {
		args = append(args, "--disable-userns")
	}
	if infoFD >= 0 {
		args = append(args, "--info-fd", strconv.Itoa(infoFD))
	}
	for _, d := range hostDirs {
		fi, err := os.Lstat(d)
		switch {
		case err != nil:
		case fi.Mode()&os.ModeSymlink != 0:
			if target, err := os.Readlink(d); err == nil {
				args = append(args, "--symlink", target, d)
			}
		case fi.IsDir():
			args = append(args, "--ro-bind", d, d)
		}
	}
	for _, f := range hostEtc {
		args = append(args, "--ro-bind-try", f, f)
	}
	return append(args, "--proc", "/proc", "--dev", "/dev")
}

// probeBwrap finds bubblewrap and runs it once as the reserved uid, with the
// options processes get. It returns a note for the operator, or why
// namespaces cannot be had here.
func (s *sandbox) probeBwrap(path string) (string, error) {
	if path == "" {
		var err error
		if path, err = exec.LookPath("bwrap"); err != nil {
			path = "/usr/bin/bwrap"
		}
	}
	if _, err := os.Stat(path); err != nil {
		return "", fmt.Errorf("bubblewrap (bwrap) is not installed (apt-get install bubblewrap): %v", err)
	}
	s.bwrap = path
	run := func() ([]byte, error) {
		args := append(s.bwrapArgs(-1), "--tmpfs", "/tmp", "--ro-bind", path, "/probe", "--", "/probe", "--version")
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, path, args...)
		cmd.Env = baseEnv
		cmd.Dir = "/"
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: credential(s.first)}
		return cmd.CombinedOutput()
	}
	s.noNestedNS = true
	out, err := run()
	if err != nil && bytes.Contains(out, []byte("disable-userns")) {
		s.noNestedNS = false // bubblewrap before 0.8
		out, err = run()
	}
	if err != nil {
		return "", fmt.Errorf("%s does not work here: %v: %s", path, err, bytes.TrimSpace(out))
	}
	if !s.noNestedNS {
		return "this bubblewrap cannot forbid nested user namespaces", nil
	}
	return "", nil
}
