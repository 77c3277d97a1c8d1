package local_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/praas-dev/praas/backend"
	"github.com/praas-dev/praas/backend/local"
)

// envProbe lists, as a JSON array, the paths the prober tries to read.
const envProbe = "PRAAS_LOCALTEST_PROBE"

// probe is what the prober does before it acts as the test image: it tries
// to read each path of envProbe and to write a file in its home, its temp
// directory and /tmp, and writes one line per attempt:
// "probe read|write PATH: ok|denied|absent|ERROR", then "probe uid N",
// "probe pids N" (the processes it sees) and "probe root NAME,NAME,...".
func probe() {
	var paths []string
	if err := json.Unmarshal([]byte(os.Getenv(envProbe)), &paths); err != nil {
		fmt.Printf("probe bad %s: %v\n", envProbe, err)
	}
	for _, p := range paths {
		fmt.Printf("probe read %s: %s\n", p, outcome(readAny(p)))
	}
	for name, d := range map[string]string{"home": os.Getenv("HOME"), "tmpdir": os.TempDir(), "tmp": "/tmp"} {
		f := filepath.Join(d, fmt.Sprintf("probe-%s-%d", name, os.Getpid()))
		err := os.WriteFile(f, []byte("mine"), 0o600)
		if err == nil {
			err = os.Remove(f)
		}
		fmt.Printf("probe write %s: %s\n", f, outcome(err))
	}
	fmt.Printf("probe uid %d\n", os.Getuid())
	ents, _ := os.ReadDir("/proc")
	pids := 0
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err == nil {
			pids++
		}
	}
	fmt.Printf("probe pids %d\n", pids)
	var root []string
	ents, _ = os.ReadDir("/")
	for _, e := range ents {
		root = append(root, e.Name())
	}
	fmt.Printf("probe root %s\n", strings.Join(root, ","))
	// Descriptors it should not have: a pipe or a memfd of bubblewrap's.
	var leaked []string
	ents, _ = os.ReadDir("/proc/self/fd")
	for _, e := range ents {
		target, _ := os.Readlink("/proc/self/fd/" + e.Name())
		if strings.HasPrefix(target, "pipe:") || strings.HasPrefix(target, "/memfd:") {
			leaked = append(leaked, e.Name()+"="+target)
		}
	}
	fmt.Printf("probe leaked %s\n", strings.Join(leaked, ","))
}

// readAny reads a file or lists a directory; /proc/PID/mem it opens only
// (its first page is not mapped).
func readAny(path string) error {
	f, err := os.Open(path)
	if err != nil || strings.HasSuffix(path, "/mem") {
		if err == nil {
			f.Close()
		}
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if fi.IsDir() {
		_, err = f.ReadDir(-1)
		return err
	}
	_, err = io.ReadAll(io.LimitReader(f, 1<<20))
	return err
}

func outcome(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, fs.ErrPermission):
		return "denied"
	case errors.Is(err, fs.ErrNotExist):
		return "absent"
	}
	return err.Error()
}

// probeResults parses the prober's lines into "read PATH" (or "write PATH",
// "uid", "pids", "root") → outcome.
func probeResults(out string) map[string]string {
	res := make(map[string]string)
	for line := range strings.Lines(out) {
		line, ok := strings.CutPrefix(strings.TrimSuffix(line, "\n"), "probe ")
		if !ok {
			continue
		}
		if k, v, ok := strings.Cut(line, ": "); ok && (strings.HasPrefix(k, "read ") || strings.HasPrefix(k, "write ")) {
			res[k] = v
		} else if k, v, ok := strings.Cut(line, " "); ok {
			res[k] = v
		}
	}
	return res
}

func osPID(t *testing.T, h backend.Handle) int {
	t.Helper()
	pid, err := strconv.Atoi(h.ID[:strings.IndexByte(h.ID, '@')])
	if err != nil {
		t.Fatalf("handle %q: %v", h.ID, err)
	}
	return pid
}

func ownerOf(t *testing.T, path string) (uid uint32, mode fs.FileMode) {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Uid, fi.Mode()
}

// TestIsolation checks what a process of one app can reach of another
// app's process, of the control plane and of its files: nothing. It can
// write its own scratch directory and /tmp.
func TestIsolation(t *testing.T) {
	for _, mode := range []local.Isolation{local.IsolationUser, local.IsolationNamespaces} {
		t.Run(string(mode), func(t *testing.T) { testIsolation(t, newEnv(t, mode)) })
	}
}

func testIsolation(t *testing.T, e env) {
	cfg := e.config()
	b := newBackend(t, cfg)
	if b.Mode() != e.mode {
		t.Fatalf("Mode() = %s, want %s (%s)", b.Mode(), e.mode, b.Isolation())
	}
	t.Log(b.Isolation())

	// App B's process, with a secret in its environment.
	hb, err := b.Start(t.Context(), imageSpec(t, "tenant-b", "p1", "B_SECRET=b-secret"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Kill(t.Context(), hb) })
	waitOutput(t, e.dir, hb, "backendtest ready")
	pids := []int{osPID(t, hb)}
	if e.mode == local.IsolationNamespaces {
		// The handle names the runtime; bubblewrap, its parent, runs as
		// the app's uid too.
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pids[0]))
		if err != nil {
			t.Fatal(err)
		}
		f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
		bwrap, _ := strconv.Atoi(f[1])
		if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", bwrap)); string(comm) != "bwrap\n" {
			t.Fatalf("parent %d of the runtime is %q, want bwrap", bwrap, comm)
		}
		// Its environment holds nothing of the process's.
		if env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", bwrap)); err != nil || len(env) != 0 {
			t.Errorf("bubblewrap's environment: %q, %v; want it empty", env, err)
		}
		pids = append(pids, bwrap)
	}
	uidB, _ := ownerOf(t, fmt.Sprintf("/proc/%d", pids[0]))
	var scratchB string
	all, _ := filepath.Glob(filepath.Join(e.sandbox, "scratch", "*", "*"))
	for _, d := range all {
		if uid, mode := ownerOf(t, d); uid == uidB {
			if mode.Perm() != 0o700 {
				t.Errorf("scratch directory %s: mode %v, want 0700", d, mode.Perm())
			}
			scratchB = d
		}
	}
	if scratchB == "" {
		t.Fatalf("no scratch directory of uid %d among %v", uidB, all)
	}

	// The control plane's files: a 0600 file in a 0700 directory, as the
	// metadata store and the signing key are kept.
	secret := t.TempDir()
	meta := filepath.Join(secret, "meta.db")
	if err := os.WriteFile(meta, []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	forbidden := []string{
		fmt.Sprintf("/proc/%d/environ", os.Getpid()), // the control plane's
		meta, secret,
		scratchB,
		filepath.Join(cfg.LogDir, "tenant-b", "p1.out"), cfg.LogDir,
		cfg.RunDir, filepath.Join(cfg.RunDir, hb.ID+".json"),
	}
	for _, pid := range pids {
		forbidden = append(forbidden, fmt.Sprintf("/proc/%d/environ", pid), fmt.Sprintf("/proc/%d/mem", pid))
	}
	for _, p := range forbidden {
		if err := readAny(p); err != nil {
			t.Fatalf("the control plane itself cannot read %s: %v", p, err)
		}
	}
	paths, _ := json.Marshal(forbidden)
	ha, err := b.Start(t.Context(), imageSpec(t, "tenant-a", "p1", envRole+"=prober", envProbe+"="+string(paths)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Kill(t.Context(), ha) })
	waitOutput(t, e.dir, ha, "backendtest ready")
	out, _ := output(e.dir, ha)
	res := probeResults(string(out))

	// Namespaces hide what user ids only forbid.
	want := "denied"
	if e.mode == local.IsolationNamespaces {
		want = "absent"
	}
	for _, p := range forbidden {
		if got := res["read "+p]; got != want {
			t.Errorf("app A read %s: %q, want %q", p, got, want)
		}
	}
	writes := 0
	for k, v := range res {
		if strings.HasPrefix(k, "write ") {
			writes++
			if v != "ok" {
				t.Errorf("app A %s: %s, want ok", k, v)
			}
		}
	}
	if writes != 3 {
		t.Errorf("app A wrote %d files, want 3; its output:\n%s", writes, out)
	}
	uidA, err := strconv.ParseUint(res["uid"], 10, 32)
	if err != nil || uidA == uint64(uidB) || uidA < uint64(local.DefaultFirstUID) || uidB < local.DefaultFirstUID {
		t.Errorf("app A runs as uid %q, app B as %d: want two uids of the isolation range", res["uid"], uidB)
	}
	if res["leaked"] != "" {
		t.Errorf("app A has descriptors it should not: %s", res["leaked"])
	}
	if e.mode == local.IsolationNamespaces {
		if res["pids"] != "1" {
			t.Errorf("app A sees %s processes, want 1: itself", res["pids"])
		}
		root := strings.Split(res["root"], ",")
		for _, name := range root {
			if !slices.Contains([]string{"app", "bin", "dev", "etc", "lib", "lib32", "lib64", "libx32", "proc", "sbin", "tmp", "usr"}, name) {
				t.Errorf("app A sees /%s; its root: %v", name, root)
			}
		}
	}

	// What the backend keeps is root's alone; what sandbox users reach
	// they cannot list.
	for dir, mode := range map[string]fs.FileMode{
		cfg.RunDir: 0o700, cfg.LogDir: 0o700, filepath.Join(cfg.LogDir, "tenant-b"): 0o700,
		e.sandbox: 0o711, filepath.Join(e.sandbox, "scratch"): 0o711, filepath.Join(e.sandbox, "images"): 0o711,
		filepath.Dir(scratchB): 0o711,
	} {
		if uid, m := ownerOf(t, dir); uid != 0 || m.Perm() != mode {
			t.Errorf("%s: owner %d, mode %v; want root's, %v", dir, uid, m.Perm(), mode)
		}
	}
	images, _ := filepath.Glob(filepath.Join(e.sandbox, "images", "*", "*"))
	if len(images) != 1 {
		t.Fatalf("image copies %v, want one: both apps run the same binary", images)
	}
	if uid, m := ownerOf(t, images[0]); uid != 0 || m.Perm() != 0o555 {
		t.Errorf("image copy %s: owner %d, mode %v; want root's, 0555", images[0], uid, m.Perm())
	}
}
