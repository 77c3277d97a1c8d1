package local

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/praas-dev/praas/backend"
	"github.com/praas-dev/praas/errs"
)

// testBackend is a backend with a sandbox for the unit tests below, which
// need no root: they never start a process.
func testBackend(t *testing.T, run string, first, count uint32) *Backend {
	return &Backend{
		cfg:       Config{RunDir: run},
		sb:        &sandbox{mode: IsolationUser, first: first, count: count, dir: t.TempDir()},
		uids:      make(map[string]uint32),
		imageSums: make(map[string]imageSum),
	}
}

// Apps get distinct uids of the range, the same from every backend sharing
// RunDir and across restarts, even when allocated concurrently.
func TestAppUID(t *testing.T) {
	run := t.TempDir()
	const first, count = 3_000_000, 40
	bs := []*Backend{testBackend(t, run, first, count), testBackend(t, run, first, count)}
	const apps = 30
	got := make([][apps]uint32, len(bs))
	var wg sync.WaitGroup
	for i, b := range bs {
		for a := range apps {
			wg.Go(func() {
				uid, err := b.appUID(fmt.Sprintf("app%d", a))
				if err != nil {
					t.Error(err)
				}
				got[i][a] = uid
			})
		}
	}
	wg.Wait()
	seen := make(map[uint32]bool)
	for a := range apps {
		uid := got[0][a]
		if uid != got[1][a] {
			t.Errorf("app%d: uid %d from one backend, %d from the other", a, uid, got[1][a])
		}
		if uid <= first || uid >= first+count || seen[uid] {
			t.Errorf("app%d: uid %d, want a fresh one in %d-%d", a, uid, first+1, first+count-1)
		}
		seen[uid] = true
	}
	restarted := testBackend(t, run, first, count)
	if uid, err := restarted.appUID("app7"); err != nil || uid != got[0][7] {
		t.Errorf("after a restart app7 has uid %d, %v; want %d", uid, err, got[0][7])
	}
	// first itself is reserved: count-1 apps fit.
	for a := apps; a < count-1; a++ {
		if _, err := restarted.appUID(fmt.Sprintf("app%d", a)); err != nil {
			t.Fatal(err)
		}
	}
	if uid, err := restarted.appUID("one-too-many"); !errors.Is(err, errs.ErrResourceExhausted) {
		t.Errorf("appUID beyond the range = %d, %v; want ErrResourceExhausted", uid, err)
	}
	// A range that no longer holds the recorded uids is an error, not a
	// silent reassignment.
	if _, err := testBackend(t, run, first+1000, count).appUID("app1"); err == nil {
		t.Errorf("appUID with another range: no error")
	}
}

func TestCheckUIDs(t *testing.T) {
	for _, c := range []struct {
		first, count uint32
		ok           bool
	}{
		{DefaultFirstUID, DefaultUIDs, true},
		{0, 100, false},                // root
		{65000, 1000, false},           // nobody is 65534 in /etc/passwd
		{1 << 31, 10, false},           // beyond 2^31-1
		{DefaultFirstUID, 1, false},    // nothing left for apps
		{(1 << 31) - 10, 20, false},    // crosses 2^31
		{(1 << 31) - 10, 10, true},     // ends at 2^31-1
		{DefaultFirstUID + 5, 2, true}, // small
	} {
		err := (&sandbox{first: c.first, count: c.count}).checkUIDs()
		if (err == nil) != c.ok {
			t.Errorf("checkUIDs(%d, %d) = %v, want ok=%v", c.first, c.count, err, c.ok)
		}
	}
}

func TestParse(t *testing.T) {
	for in, want := range map[string]Isolation{"": IsolationAuto, "auto": IsolationAuto, "none": IsolationNone, "user": IsolationUser, "namespaces": IsolationNamespaces} {
		if got, err := ParseIsolation(in); err != nil || got != want {
			t.Errorf("ParseIsolation(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := ParseIsolation("chroot"); !errors.Is(err, errs.ErrInvalidArgument) {
		t.Errorf("ParseIsolation(chroot): %v", err)
	}
	if first, n, err := ParseUIDRange("1900000000-1900099999"); err != nil || first != 1_900_000_000 || n != 100_000 {
		t.Errorf("ParseUIDRange = %d, %d, %v", first, n, err)
	}
	for _, bad := range []string{"", "5", "5-5", "6-5", "a-b", "-5", "1-99999999999"} {
		if _, _, err := ParseUIDRange(bad); !errors.Is(err, errs.ErrInvalidArgument) {
			t.Errorf("ParseUIDRange(%q): %v", bad, err)
		}
	}
}

// Images are copied once per content, root's and read-only; a changed
// binary is a new copy.
func TestImageCopies(t *testing.T) {
	b := testBackend(t, t.TempDir(), DefaultFirstUID, DefaultUIDs)
	if err := os.MkdirAll(b.sb.imagesDir(), 0o711); err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(t.TempDir(), "myimage")
	if err := os.WriteFile(src, []byte("v1"), 0o700); err != nil {
		t.Fatal(err)
	}
	c1, err := b.image(src)
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(c1) != "myimage" || !strings.HasPrefix(c1, b.sb.imagesDir()+"/") {
		t.Errorf("copy at %s, want SANDBOX/images/SHA/myimage", c1)
	}
	if fi, err := os.Stat(c1); err != nil || fi.Mode().Perm() != 0o555 {
		t.Errorf("copy: %v, mode %v; want 0555", err, fi.Mode())
	}
	// Another backend finds the same copy.
	b2 := testBackend(t, t.TempDir(), DefaultFirstUID, DefaultUIDs)
	b2.sb.dir = b.sb.dir
	if c, err := b2.image(src); err != nil || c != c1 {
		t.Errorf("second backend's copy %s, %v; want %s", c, err, c1)
	}
	time.Sleep(10 * time.Millisecond) // a new mtime, even on coarse clocks
	if err := os.WriteFile(src, []byte("v2, longer"), 0o700); err != nil {
		t.Fatal(err)
	}
	c2, err := b.image(src)
	if err != nil || c2 == c1 {
		t.Fatalf("copy after a change: %s, %v; want a new one", c2, err)
	}
	if data, _ := os.ReadFile(c2); !bytes.Equal(data, []byte("v2, longer")) {
		t.Errorf("copy holds %q", data)
	}
	// Unused copies go after a week; used ones are kept fresh.
	old := time.Now().Add(-keepImages - time.Hour)
	os.Chtimes(filepath.Dir(c1), old, old)
	b.pruneImages()
	if _, err := os.Stat(c1); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stale copy %s kept: %v", c1, err)
	}
	if _, err := os.Stat(c2); err != nil {
		t.Errorf("fresh copy %s: %v", c2, err)
	}
}

func TestSandboxExit(t *testing.T) {
	at := time.Now()
	for _, c := range []struct {
		in, want backend.Exit
	}{
		{backend.Exit{Code: 0, Reason: "exit status 0"}, backend.Exit{Code: 0, Reason: "exit status 0"}},
		{backend.Exit{Code: 3, Reason: "exit status 3"}, backend.Exit{Code: 3, Reason: "exit status 3"}},
		{backend.Exit{Code: 128, Reason: "exit status 128"}, backend.Exit{Code: 128, Reason: "exit status 128"}},
		{backend.Exit{Code: 137, Reason: "exit status 137"}, backend.Exit{Code: -1, Reason: "signal: killed"}},
		{backend.Exit{Code: 143, Reason: "exit status 143"}, backend.Exit{Code: -1, Reason: "signal: terminated"}},
		{backend.Exit{Code: -1, Reason: "signal: killed"}, backend.Exit{Code: -1, Reason: "signal: killed"}},
		{backend.Exit{Code: 255, Reason: "exit status 255"}, backend.Exit{Code: 255, Reason: "exit status 255"}},
	} {
		c.in.At, c.want.At = at, at
		if got := sandboxExit(c.in); got != c.want {
			t.Errorf("sandboxExit(%+v) = %+v, want %+v", c.in, got, c.want)
		}
	}
}

// Empty scratch directories of other RunDirs go after a day; a Start whose
// own one went meanwhile makes it again.
func TestScratchParents(t *testing.T) {
	b := testBackend(t, t.TempDir(), DefaultFirstUID, DefaultUIDs)
	b.scratch = filepath.Join(b.sb.scratchDir(), "mine")
	if err := os.MkdirAll(b.scratch, 0o711); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-25 * time.Hour)
	mk := func(name string, age time.Time, file bool) string {
		d := filepath.Join(b.sb.scratchDir(), name)
		if err := os.Mkdir(d, 0o711); err != nil {
			t.Fatal(err)
		}
		if file {
			os.Mkdir(filepath.Join(d, "in-use"), 0o700)
		}
		os.Chtimes(d, age, age)
		return d
	}
	gone, busy, recent := mk("old-empty", old, false), mk("old-busy", old, true), mk("recent", time.Now(), false)
	os.Chtimes(b.scratch, old, old)
	b.pruneScratchParents()
	for d, want := range map[string]bool{gone: false, busy: true, recent: true, b.scratch: true} {
		if _, err := os.Stat(d); (err == nil) != want {
			t.Errorf("%s: %v, want kept=%v", d, err, want)
		}
	}
	os.Remove(b.scratch)
	d, err := b.newScratch(uint32(os.Getuid()))
	if err != nil || filepath.Dir(d) != b.scratch {
		t.Fatalf("newScratch after its parent went: %s, %v", d, err)
	}
	if fi, err := os.Stat(b.scratch); err != nil || fi.Mode().Perm() != 0o711 {
		t.Errorf("scratch parent made again: %v, %v; want mode 0711", err, fi.Mode())
	}
	b.removeScratch(d)
	if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("removeScratch left %s: %v", d, err)
	}
	// Never what a record names elsewhere.
	b.removeScratch(busy)
	if _, err := os.Stat(busy); err != nil {
		t.Errorf("removeScratch removed %s, not a scratch directory of this RunDir", busy)
	}
}
