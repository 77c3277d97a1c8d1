package storetest

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/praas-dev/praas/errs"
	"github.com/praas-dev/praas/store"
)

// MetadataOption configures RunMetadata.
type MetadataOption func(*metadataSuite)

// ReopenMetadata gives RunMetadata a way to open a store again over the data
// of closed, a store that open returned and the suite has closed. It enables
// the persistence tests.
func ReopenMetadata(reopen func(t *testing.T, closed store.Metadata) store.Metadata) MetadataOption {
	return func(s *metadataSuite) { s.reopen = reopen }
}

type metadataSuite struct {
	open   func(t *testing.T) store.Metadata
	reopen func(t *testing.T, closed store.Metadata) store.Metadata
}

// RunMetadata runs the conformance suite for store.Metadata. open must return
// a new, empty store each time it is called; the suite closes it.
func RunMetadata(t *testing.T, open func(t *testing.T) store.Metadata, opts ...MetadataOption) {
	s := &metadataSuite{open: open}
	for _, o := range opts {
		o(s)
	}
	tests := []struct {
		name string
		fn   func(t *testing.T, ctx context.Context, m store.Metadata)
	}{
		{"AppNotFound", testAppNotFound},
		{"AppRoundTrip", testAppRoundTrip},
		{"CreateAppAlreadyExists", testCreateAppAlreadyExists},
		{"CreateAppConcurrent", testCreateAppConcurrent},
		{"ListAppsSorted", testListAppsSorted},
		{"DeleteAppCascades", testDeleteAppCascades},
		{"DeleteAppRacesCreate", testDeleteAppRacesCreate},
		{"BumpEpoch", testBumpEpoch},
		{"BumpEpochConcurrent", testBumpEpochConcurrent},
		{"ProcessNotFound", testProcessNotFound},
		{"ProcessRoundTrip", testProcessRoundTrip},
		{"CreateProcessAlreadyExists", testCreateProcessAlreadyExists},
		{"ListProcessesSortedPerApp", testListProcessesSortedPerApp},
		{"NamesWithSeparators", testNamesWithSeparators},
		{"DeleteProcessRemovesBackup", testDeleteProcessRemovesBackup},
		{"Backup", testBackup},
		{"BackupAbsent", testBackupAbsent},
		{"BackupConcurrent", testBackupConcurrent},
		{"BackupSeqAfterTrim", testBackupSeqAfterTrim},
		{"BackupStats", testBackupStats},
		{"AppRevision", testAppRevision},
		{"ProcessRevision", testProcessRevision},
		{"UpdateProcessCounter", testUpdateProcessCounter},
		{"UpdateProcessOneWins", testUpdateProcessOneWins},
		{"UpdateAppOneWins", testUpdateAppOneWins},
		{"LeaseOneWins", testLeaseOneWins},
		{"Replicas", testReplicas},
		{"KeyRoundTrip", testKeyRoundTrip},
		{"KeyNotFound", testKeyNotFound},
		{"CreateKeyAlreadyExists", testCreateKeyAlreadyExists},
		{"ListKeysSortedPerApp", testListKeysSortedPerApp},
		{"DeleteKey", testDeleteKey},
		{"DeleteAppRemovesKeys", testDeleteAppRemovesKeys},
		{"CreateKeyConcurrent", testCreateKeyConcurrent},
		{"DeleteAppRacesCreateKey", testDeleteAppRacesCreateKey},
		{"UsageAddList", testUsageAddList},
		{"UsageOutlivesDelete", testUsageOutlivesDelete},
		{"UsagePrune", testUsagePrune},
		{"UsageConcurrent", testUsageConcurrent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := open(t)
			t.Cleanup(func() {
				if err := m.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			})
			tt.fn(t, t.Context(), m)
		})
	}
	t.Run("Persistence", func(t *testing.T) {
		if s.reopen == nil {
			t.Skip("no reopen function given")
		}
		s.testPersistence(t, t.Context())
	})
	t.Run("UsagePersistence", func(t *testing.T) {
		if s.reopen == nil {
			t.Skip("no reopen function given")
		}
		s.testUsagePersistence(t, t.Context())
	})
	t.Run("KeyPersistence", func(t *testing.T) {
		if s.reopen == nil {
			t.Skip("no reopen function given")
		}
		s.testKeyPersistence(t, t.Context())
	})
}

// newApp and newProcess return records as a create stores them, with
// revision 1.
func newApp(name string) store.App {
	return store.App{Name: name, Image: "img:" + name, Secret: "s3cret-" + name, CreatedAt: t0, Revision: 1}
}

func newProcess(app, pid string) store.Process {
	return store.Process{
		App: app, PID: pid, Status: store.StatusActive,
		Address: "127.0.0.1:4000", Handle: "1234", Snapshot: app + "/" + pid + "/1",
		Usage:         store.Usage{Invocations: 3, BusyNanos: 4e9, BytesIn: 10, BytesOut: 20, StateByteSeconds: 1 << 40, SwapByteSeconds: 7},
		UsageBase:     store.Usage{Invocations: 1, BytesOut: 2, SwapByteSeconds: 3},
		SnapshotBytes: 4096, SwappedAt: t0.Add(-3e9),
		CreatedAt: t0, UpdatedAt: t0.Add(1e9), LastActive: t0.Add(2e9),
		Revision: 1, Generation: 3, Owner: "cp-" + pid,
	}
}

// createProcess creates p, checks that CreateProcess returns it as stored,
// with revision 1, and returns that.
func createProcess(t *testing.T, ctx context.Context, m store.Metadata, p store.Process) store.Process {
	t.Helper()
	got, err := m.CreateProcess(ctx, p)
	must(t, "CreateProcess "+p.App+"/"+p.PID, err)
	p.Revision = 1
	diff(t, "CreateProcess result", got, p)
	return got
}

func newMessage(i int) store.Message {
	return store.Message{Src: fmt.Sprintf("src%d", i%3), Key: fmt.Sprintf("k%d", i), Data: []byte(fmt.Sprintf("payload %d \x00\xff", i))}
}

func testAppNotFound(t *testing.T, ctx context.Context, m store.Metadata) {
	_, err := m.GetApp(ctx, "nope")
	wantErr(t, "GetApp", err, errs.ErrNotFound)
	wantErr(t, "DeleteApp", m.DeleteApp(ctx, "nope"), errs.ErrNotFound)
	_, err = m.BumpEpoch(ctx, "nope")
	wantErr(t, "BumpEpoch", err, errs.ErrNotFound)
	_, err = m.ListProcesses(ctx, "nope")
	wantErr(t, "ListProcesses", err, errs.ErrNotFound)
	// A failed BumpEpoch must not have created the app.
	_, err = m.GetApp(ctx, "nope")
	wantErr(t, "GetApp after BumpEpoch", err, errs.ErrNotFound)
}

func testAppRoundTrip(t *testing.T, ctx context.Context, m store.Metadata) {
	want := newApp("web")
	want.Epoch = 7
	must(t, "CreateApp", m.CreateApp(ctx, want))
	got, err := m.GetApp(ctx, "web")
	must(t, "GetApp", err)
	diff(t, "GetApp", got, want)
}

func testCreateAppAlreadyExists(t *testing.T, ctx context.Context, m store.Metadata) {
	first := newApp("web")
	must(t, "CreateApp", m.CreateApp(ctx, first))
	second := newApp("web")
	second.Image = "other"
	wantErr(t, "second CreateApp", m.CreateApp(ctx, second), errs.ErrAlreadyExists)
	got, err := m.GetApp(ctx, "web")
	must(t, "GetApp", err)
	diff(t, "app after failed CreateApp", got, first)
}

func testCreateAppConcurrent(t *testing.T, ctx context.Context, m store.Metadata) {
	const n = 8
	errc := make(chan error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			app := newApp("race")
			app.Image = fmt.Sprint(i)
			errc <- m.CreateApp(ctx, app)
		})
	}
	wg.Wait()
	close(errc)
	won := 0
	for err := range errc {
		switch {
		case err == nil:
			won++
		default:
			wantErr(t, "losing CreateApp", err, errs.ErrAlreadyExists)
		}
	}
	if won != 1 {
		t.Errorf("%d concurrent CreateApp calls succeeded, want exactly 1", won)
	}
}

func testListAppsSorted(t *testing.T, ctx context.Context, m store.Metadata) {
	apps, err := m.ListApps(ctx)
	must(t, "ListApps on empty store", err)
	diff(t, "ListApps on empty store", apps, []store.App{})

	names := []string{"m", "b", "zz", "a", "B", "a-1", "ab"}
	for _, n := range names {
		must(t, "CreateApp "+n, m.CreateApp(ctx, newApp(n)))
	}
	apps, err = m.ListApps(ctx)
	must(t, "ListApps", err)
	var want []store.App
	for _, n := range []string{"B", "a", "a-1", "ab", "b", "m", "zz"} {
		want = append(want, newApp(n))
	}
	diff(t, "ListApps", apps, want)
}

func testDeleteAppCascades(t *testing.T, ctx context.Context, m store.Metadata) {
	for _, app := range []string{"doomed", "kept"} {
		must(t, "CreateApp", m.CreateApp(ctx, newApp(app)))
		for _, pid := range []string{"p1", "p2"} {
			createProcess(t, ctx, m, newProcess(app, pid))
			_, err := m.AppendBackup(ctx, app, pid, newMessage(1))
			must(t, "AppendBackup", err)
		}
	}
	_, err := m.BumpEpoch(ctx, "doomed")
	must(t, "BumpEpoch", err)

	must(t, "DeleteApp", m.DeleteApp(ctx, "doomed"))
	_, err = m.GetApp(ctx, "doomed")
	wantErr(t, "GetApp after DeleteApp", err, errs.ErrNotFound)
	_, err = m.GetProcess(ctx, "doomed", "p1")
	wantErr(t, "GetProcess after DeleteApp", err, errs.ErrNotFound)
	wantErr(t, "second DeleteApp", m.DeleteApp(ctx, "doomed"), errs.ErrNotFound)

	// Recreating the app must not resurrect anything of the old one.
	must(t, "CreateApp again", m.CreateApp(ctx, newApp("doomed")))
	app, err := m.GetApp(ctx, "doomed")
	must(t, "GetApp", err)
	diff(t, "recreated app", app, newApp("doomed"))
	procs, err := m.ListProcesses(ctx, "doomed")
	must(t, "ListProcesses", err)
	diff(t, "processes of recreated app", procs, []store.Process{})
	createProcess(t, ctx, m, newProcess("doomed", "p1"))
	msgs, err := m.ListBackup(ctx, "doomed", "p1")
	must(t, "ListBackup", err)
	diff(t, "backup of recreated process", msgs, []store.Message{})

	// The other app is untouched.
	procs, err = m.ListProcesses(ctx, "kept")
	must(t, "ListProcesses kept", err)
	diff(t, "processes of kept app", procs, []store.Process{newProcess("kept", "p1"), newProcess("kept", "p2")})
	msgs, err = m.ListBackup(ctx, "kept", "p2")
	must(t, "ListBackup kept", err)
	if len(msgs) != 1 {
		t.Errorf("kept app's backup has %d messages, want 1", len(msgs))
	}
}

func testDeleteAppRacesCreate(t *testing.T, ctx context.Context, m store.Metadata) {
	// Whatever the interleaving, nothing created for the old app may outlive
	// DeleteApp and show up in a new app of the same name.
	for round := range 10 {
		must(t, "CreateApp", m.CreateApp(ctx, newApp("web")))
		var wg sync.WaitGroup
		wg.Go(func() {
			for i := range 10 {
				pid := fmt.Sprintf("p%d", i)
				if _, err := m.CreateProcess(ctx, newProcess("web", pid)); err != nil {
					wantErr(t, "CreateProcess racing DeleteApp", err, errs.ErrNotFound)
					continue
				}
				if _, err := m.AppendBackup(ctx, "web", pid, newMessage(i)); err != nil {
					wantErr(t, "AppendBackup racing DeleteApp", err, errs.ErrNotFound)
				}
			}
		})
		wg.Go(func() {
			if err := m.DeleteApp(ctx, "web"); err != nil {
				t.Errorf("round %d: DeleteApp: %v", round, err)
			}
		})
		wg.Wait()
		must(t, "CreateApp after race", m.CreateApp(ctx, newApp("web")))
		procs, err := m.ListProcesses(ctx, "web")
		must(t, "ListProcesses", err)
		diff(t, fmt.Sprintf("round %d: processes of recreated app", round), procs, []store.Process{})
		for i := range 10 {
			msgs, err := m.ListBackup(ctx, "web", fmt.Sprintf("p%d", i))
			must(t, "ListBackup", err)
			diff(t, fmt.Sprintf("round %d: backup of p%d", round, i), msgs, []store.Message{})
		}
		must(t, "DeleteApp", m.DeleteApp(ctx, "web"))
	}
}

func testBumpEpoch(t *testing.T, ctx context.Context, m store.Metadata) {
	app := newApp("web")
	app.Epoch = 41
	must(t, "CreateApp", m.CreateApp(ctx, app))
	for want := uint64(42); want < 45; want++ {
		got, err := m.BumpEpoch(ctx, "web")
		must(t, "BumpEpoch", err)
		if got != want {
			t.Errorf("BumpEpoch = %d, want %d", got, want)
		}
	}
	app.Epoch = 44
	app.Revision = 4 // each bump is a write
	got, err := m.GetApp(ctx, "web")
	must(t, "GetApp", err)
	diff(t, "app after BumpEpoch", got, app)
}

func testBumpEpochConcurrent(t *testing.T, ctx context.Context, m store.Metadata) {
	must(t, "CreateApp", m.CreateApp(ctx, newApp("web")))
	const workers, each = 8, 25
	var (
		mu   sync.Mutex
		seen = map[uint64]bool{}
		wg   sync.WaitGroup
	)
	for range workers {
		wg.Go(func() {
			for range each {
				e, err := m.BumpEpoch(ctx, "web")
				if err != nil {
					t.Errorf("BumpEpoch: %v", err)
					return
				}
				mu.Lock()
				if seen[e] {
					t.Errorf("BumpEpoch returned %d twice", e)
				}
				seen[e] = true
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	for e := uint64(1); e <= workers*each; e++ {
		if !seen[e] {
			t.Errorf("no BumpEpoch returned %d", e)
		}
	}
	app, err := m.GetApp(ctx, "web")
	must(t, "GetApp", err)
	if app.Epoch != workers*each {
		t.Errorf("epoch after %d bumps = %d", workers*each, app.Epoch)
	}
}

func testProcessNotFound(t *testing.T, ctx context.Context, m store.Metadata) {
	_, err := m.CreateProcess(ctx, newProcess("nope", "p1"))
	wantErr(t, "CreateProcess in absent app", err, errs.ErrNotFound)
	must(t, "CreateApp", m.CreateApp(ctx, newApp("web")))
	_, err = m.GetProcess(ctx, "web", "p1")
	wantErr(t, "GetProcess", err, errs.ErrNotFound)
	_, err = m.GetProcess(ctx, "nope", "p1")
	wantErr(t, "GetProcess in absent app", err, errs.ErrNotFound)
	_, err = m.UpdateProcess(ctx, newProcess("web", "p1"))
	wantErr(t, "UpdateProcess", err, errs.ErrNotFound)
	_, err = m.UpdateProcess(ctx, newProcess("nope", "p1"))
	wantErr(t, "UpdateProcess in absent app", err, errs.ErrNotFound)
	wantErr(t, "DeleteProcess", m.DeleteProcess(ctx, "web", "p1"), errs.ErrNotFound)
	wantErr(t, "DeleteProcess in absent app", m.DeleteProcess(ctx, "nope", "p1"), errs.ErrNotFound)
	// A failed UpdateProcess must not have created the process.
	_, err = m.GetProcess(ctx, "web", "p1")
	wantErr(t, "GetProcess after UpdateProcess", err, errs.ErrNotFound)

	createProcess(t, ctx, m, newProcess("web", "p1"))
	must(t, "DeleteProcess", m.DeleteProcess(ctx, "web", "p1"))
	_, err = m.GetProcess(ctx, "web", "p1")
	wantErr(t, "GetProcess after DeleteProcess", err, errs.ErrNotFound)
	wantErr(t, "second DeleteProcess", m.DeleteProcess(ctx, "web", "p1"), errs.ErrNotFound)
}

func testProcessRoundTrip(t *testing.T, ctx context.Context, m store.Metadata) {
	must(t, "CreateApp", m.CreateApp(ctx, newApp("web")))
	p := newProcess("web", "p1")
	p.Status = store.StatusAllocating
	createProcess(t, ctx, m, p)
	got, err := m.GetProcess(ctx, "web", "p1")
	must(t, "GetProcess", err)
	diff(t, "GetProcess", got, p)

	p.Status = store.StatusSwapped
	p.Address = ""
	p.Snapshot = "web/p1/2"
	p.Usage.Invocations++
	p.UpdatedAt = t0.Add(time.Hour)
	p.Generation++
	p.Owner = ""
	stored, err := m.UpdateProcess(ctx, p)
	must(t, "UpdateProcess", err)
	p.Revision++
	diff(t, "UpdateProcess result", stored, p)
	got, err = m.GetProcess(ctx, "web", "p1")
	must(t, "GetProcess after UpdateProcess", err)
	diff(t, "GetProcess after UpdateProcess", got, p)
}

func testCreateProcessAlreadyExists(t *testing.T, ctx context.Context, m store.Metadata) {
	must(t, "CreateApp", m.CreateApp(ctx, newApp("web")))
	p := newProcess("web", "p1")
	createProcess(t, ctx, m, p)
	dup := p
	dup.Status = store.StatusFailed
	_, err := m.CreateProcess(ctx, dup)
	wantErr(t, "second CreateProcess", err, errs.ErrAlreadyExists)
	got, err := m.GetProcess(ctx, "web", "p1")
	must(t, "GetProcess", err)
	diff(t, "process after failed CreateProcess", got, p)
}

func testListProcessesSortedPerApp(t *testing.T, ctx context.Context, m store.Metadata) {
	// "a" and "ab" would share a key prefix in a naive layout.
	for _, app := range []string{"a", "ab"} {
		must(t, "CreateApp", m.CreateApp(ctx, newApp(app)))
	}
	procs, err := m.ListProcesses(ctx, "a")
	must(t, "ListProcesses of empty app", err)
	diff(t, "ListProcesses of empty app", procs, []store.Process{})

	for _, pid := range []string{"p10", "p2", "P1", "p1", "b"} {
		createProcess(t, ctx, m, newProcess("a", pid))
	}
	createProcess(t, ctx, m, newProcess("ab", "c"))

	procs, err = m.ListProcesses(ctx, "a")
	must(t, "ListProcesses", err)
	var want []store.Process
	for _, pid := range []string{"P1", "b", "p1", "p10", "p2"} {
		want = append(want, newProcess("a", pid))
	}
	diff(t, "ListProcesses(a)", procs, want)
	procs, err = m.ListProcesses(ctx, "ab")
	must(t, "ListProcesses", err)
	diff(t, "ListProcesses(ab)", procs, []store.Process{newProcess("ab", "c")})
}

func testNamesWithSeparators(t *testing.T, ctx context.Context, m store.Metadata) {
	// Pairs that collide if a store joins app and pid with a separator
	// without escaping.
	pairs := [][2]string{{"a:b", "c"}, {"a", "b:c"}, {"a/b", "c"}, {"a", "b/c"}, {"a%3Ab", "c"}, {"x y", "ü\x00"}}
	for _, p := range pairs {
		if _, err := m.GetApp(ctx, p[0]); err != nil {
			must(t, "CreateApp "+p[0], m.CreateApp(ctx, newApp(p[0])))
		}
		createProcess(t, ctx, m, newProcess(p[0], p[1]))
	}
	// Give each process its own revision, so that shared revision keys show.
	for i, p := range pairs {
		for range i {
			_, err := store.UpdateProcess(ctx, m, p[0], p[1], func(*store.Process) error { return nil })
			must(t, "UpdateProcess", err)
		}
	}
	for i, p := range pairs {
		got, err := m.GetProcess(ctx, p[0], p[1])
		must(t, "GetProcess", err)
		want := newProcess(p[0], p[1])
		want.Revision += uint64(i)
		diff(t, "GetProcess", got, want)
		for range i + 1 {
			_, err := m.AppendBackup(ctx, p[0], p[1], newMessage(i))
			must(t, "AppendBackup", err)
		}
	}
	for i, p := range pairs {
		msgs, err := m.ListBackup(ctx, p[0], p[1])
		must(t, "ListBackup", err)
		if len(msgs) != i+1 {
			t.Errorf("backup of %q/%q has %d messages, want %d", p[0], p[1], len(msgs), i+1)
		}
	}
	procs, err := m.ListProcesses(ctx, "a")
	must(t, "ListProcesses", err)
	bc, bColonC := newProcess("a", "b/c"), newProcess("a", "b:c")
	bc.Revision, bColonC.Revision = 4, 2 // pairs[3] and pairs[1]
	diff(t, "ListProcesses(a)", procs, []store.Process{bc, bColonC})
	must(t, "DeleteApp", m.DeleteApp(ctx, "a"))
	got, err := m.GetProcess(ctx, "a:b", "c")
	must(t, "GetProcess of a sibling after DeleteApp", err)
	diff(t, "sibling process", got, newProcess("a:b", "c"))
	msgs, err := m.ListBackup(ctx, "a:b", "c")
	must(t, "ListBackup of a sibling after DeleteApp", err)
	if len(msgs) != 1 {
		t.Errorf("sibling backup has %d messages after DeleteApp, want 1", len(msgs))
	}
}

func testDeleteProcessRemovesBackup(t *testing.T, ctx context.Context, m store.Metadata) {
	must(t, "CreateApp", m.CreateApp(ctx, newApp("web")))
	for _, pid := range []string{"p1", "p2"} {
		createProcess(t, ctx, m, newProcess("web", pid))
		for i := range 3 {
			_, err := m.AppendBackup(ctx, "web", pid, newMessage(i))
			must(t, "AppendBackup", err)
		}
	}
	must(t, "DeleteProcess", m.DeleteProcess(ctx, "web", "p1"))
	msgs, err := m.ListBackup(ctx, "web", "p1")
	must(t, "ListBackup of deleted process", err)
	diff(t, "ListBackup of deleted process", msgs, []store.Message{})

	createProcess(t, ctx, m, newProcess("web", "p1"))
	msgs, err = m.ListBackup(ctx, "web", "p1")
	must(t, "ListBackup of recreated process", err)
	diff(t, "ListBackup of recreated process", msgs, []store.Message{})

	msgs, err = m.ListBackup(ctx, "web", "p2")
	must(t, "ListBackup of sibling", err)
	if len(msgs) != 3 {
		t.Errorf("sibling backup has %d messages, want 3", len(msgs))
	}
}

func testBackup(t *testing.T, ctx context.Context, m store.Metadata) {
	must(t, "CreateApp", m.CreateApp(ctx, newApp("web")))
	createProcess(t, ctx, m, newProcess("web", "p1"))
	createProcess(t, ctx, m, newProcess("web", "p2"))

	msgs, err := m.ListBackup(ctx, "web", "p1")
	must(t, "ListBackup of empty queue", err)
	diff(t, "ListBackup of empty queue", msgs, []store.Message{})

	var want []store.Message
	var last uint64
	for i := range 10 {
		msg := newMessage(i)
		msg.Seq = 999 // must be ignored
		seq, err := m.AppendBackup(ctx, "web", "p1", msg)
		must(t, "AppendBackup", err)
		if seq <= last {
			t.Fatalf("AppendBackup returned seq %d after %d", seq, last)
		}
		last = seq
		msg.Seq = seq
		want = append(want, msg)
	}
	// An empty message and one to another queue.
	seq, err := m.AppendBackup(ctx, "web", "p1", store.Message{})
	must(t, "AppendBackup empty", err)
	if seq <= last {
		t.Fatalf("AppendBackup returned seq %d after %d", seq, last)
	}
	last = seq
	want = append(want, store.Message{Seq: seq})
	_, err = m.AppendBackup(ctx, "web", "p2", newMessage(100))
	must(t, "AppendBackup p2", err)

	msgs, err = m.ListBackup(ctx, "web", "p1")
	must(t, "ListBackup", err)
	diff(t, "ListBackup", msgs, want)

	steps := []struct {
		name string
		upTo uint64
		keep []store.Message
	}{
		{"zero is a no-op", 0, want},
		{"below the first", want[0].Seq - 1, want},
		{"first three", want[2].Seq, want[3:]},
		{"again, idempotent", want[2].Seq, want[3:]},
		{"below what is left", want[1].Seq, want[3:]},
		{"up to one", want[6].Seq, want[7:]},
		{"all and beyond", last + 1000, nil},
	}
	for _, st := range steps {
		must(t, "TrimBackup "+st.name, m.TrimBackup(ctx, "web", "p1", st.upTo))
		msgs, err := m.ListBackup(ctx, "web", "p1")
		must(t, "ListBackup", err)
		diff(t, "ListBackup after TrimBackup "+st.name, msgs, st.keep)
	}

	// Sequence numbers keep increasing after the queue was emptied.
	seq, err = m.AppendBackup(ctx, "web", "p1", newMessage(11))
	must(t, "AppendBackup after trim", err)
	if seq <= last {
		t.Errorf("AppendBackup after trimming all returned seq %d, want > %d", seq, last)
	}
	msgs, err = m.ListBackup(ctx, "web", "p2")
	must(t, "ListBackup p2", err)
	if len(msgs) != 1 {
		t.Errorf("p2's queue has %d messages, want 1", len(msgs))
	}
}

func testBackupAbsent(t *testing.T, ctx context.Context, m store.Metadata) {
	_, err := m.AppendBackup(ctx, "nope", "p1", newMessage(1))
	wantErr(t, "AppendBackup in absent app", err, errs.ErrNotFound)
	must(t, "CreateApp", m.CreateApp(ctx, newApp("web")))
	_, err = m.AppendBackup(ctx, "web", "p1", newMessage(1))
	wantErr(t, "AppendBackup to absent process", err, errs.ErrNotFound)
	msgs, err := m.ListBackup(ctx, "web", "p1")
	must(t, "ListBackup of absent process", err)
	diff(t, "ListBackup of absent process", msgs, []store.Message{})
	must(t, "TrimBackup of absent process", m.TrimBackup(ctx, "web", "p1", 10))
}

func testBackupConcurrent(t *testing.T, ctx context.Context, m store.Metadata) {
	must(t, "CreateApp", m.CreateApp(ctx, newApp("web")))
	createProcess(t, ctx, m, newProcess("web", "p1"))
	const workers, each = 6, 20
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			var last uint64
			for i := range each {
				msg := store.Message{Src: fmt.Sprint(w), Key: fmt.Sprint(i)}
				seq, err := m.AppendBackup(ctx, "web", "p1", msg)
				if err != nil {
					t.Errorf("AppendBackup: %v", err)
					return
				}
				if seq <= last {
					t.Errorf("worker %d: seq %d after %d", w, seq, last)
				}
				last = seq
			}
		})
	}
	wg.Wait()
	msgs, err := m.ListBackup(ctx, "web", "p1")
	must(t, "ListBackup", err)
	if len(msgs) != workers*each {
		t.Fatalf("ListBackup has %d messages, want %d", len(msgs), workers*each)
	}
	next := map[string]int{} // per source, keys must come in order
	for i, msg := range msgs {
		if i > 0 && msg.Seq <= msgs[i-1].Seq {
			t.Errorf("ListBackup not in seq order at %d: %d after %d", i, msg.Seq, msgs[i-1].Seq)
		}
		if want := fmt.Sprint(next[msg.Src]); msg.Key != want {
			t.Errorf("source %s: key %s, want %s", msg.Src, msg.Key, want)
		}
		next[msg.Src]++
	}
}

func (s *metadataSuite) testPersistence(t *testing.T, ctx context.Context) {
	m := s.open(t)
	must(t, "CreateApp", m.CreateApp(ctx, newApp("web")))
	must(t, "CreateApp", m.CreateApp(ctx, newApp("gone")))
	must(t, "DeleteApp", m.DeleteApp(ctx, "gone"))
	epoch, err := m.BumpEpoch(ctx, "web")
	must(t, "BumpEpoch", err)
	app, err := m.GetApp(ctx, "web")
	must(t, "GetApp", err)
	app.Image = "img:v2"
	app, err = m.UpdateApp(ctx, app)
	must(t, "UpdateApp", err)

	p1 := createProcess(t, ctx, m, newProcess("web", "p1"))
	p2 := createProcess(t, ctx, m, newProcess("web", "p2"))
	p1.Status = store.StatusSwapped
	p1.Owner = ""
	p1, err = m.UpdateProcess(ctx, p1)
	must(t, "UpdateProcess p1", err)
	for _, owner := range []string{"cp-x", "cp-y"} { // two takeovers
		p2.Owner = owner
		p2.Generation++
		p2, err = m.UpdateProcess(ctx, p2)
		must(t, "UpdateProcess p2", err)
	}

	replicas := []store.Replica{newReplica("cp-x", time.Minute), newReplica("cp-y", -time.Minute)}
	for _, r := range append(replicas, newReplica("cp-z", 0)) {
		must(t, "PutReplica", m.PutReplica(ctx, r))
	}
	must(t, "DeleteReplica", m.DeleteReplica(ctx, "cp-z"))

	var msgs []store.Message
	for i := range 4 {
		msg := newMessage(i)
		msg.Seq, err = m.AppendBackup(ctx, "web", "p1", msg)
		must(t, "AppendBackup", err)
		msgs = append(msgs, msg)
	}
	must(t, "TrimBackup", m.TrimBackup(ctx, "web", "p1", msgs[0].Seq))
	msgs = msgs[1:]
	must(t, "Close", m.Close())

	m = s.reopen(t, m)
	t.Cleanup(func() { m.Close() })
	apps, err := m.ListApps(ctx)
	must(t, "ListApps after reopen", err)
	diff(t, "ListApps after reopen", apps, []store.App{app})
	procs, err := m.ListProcesses(ctx, "web")
	must(t, "ListProcesses after reopen", err)
	diff(t, "ListProcesses after reopen", procs, []store.Process{p1, p2})
	gotReplicas, err := m.ListReplicas(ctx)
	must(t, "ListReplicas after reopen", err)
	diff(t, "ListReplicas after reopen", gotReplicas, replicas)
	got, err := m.ListBackup(ctx, "web", "p1")
	must(t, "ListBackup after reopen", err)
	diff(t, "ListBackup after reopen", got, msgs)

	// Counters continue where they were.
	epoch2, err := m.BumpEpoch(ctx, "web")
	must(t, "BumpEpoch after reopen", err)
	if epoch2 != epoch+1 {
		t.Errorf("BumpEpoch after reopen = %d, want %d", epoch2, epoch+1)
	}
	gotApp, err := m.GetApp(ctx, "web")
	must(t, "GetApp after reopen", err)
	if gotApp.Revision != app.Revision+1 {
		t.Errorf("app revision after reopen and BumpEpoch = %d, want %d", gotApp.Revision, app.Revision+1)
	}
	_, err = m.UpdateProcess(ctx, p2)
	must(t, "UpdateProcess after reopen", err)
	_, err = m.UpdateProcess(ctx, p2) // now stale
	wantErr(t, "stale UpdateProcess after reopen", err, errs.ErrFailedPrecondition)
	seq, err := m.AppendBackup(ctx, "web", "p1", newMessage(9))
	must(t, "AppendBackup after reopen", err)
	if last := msgs[len(msgs)-1].Seq; seq <= last {
		t.Errorf("AppendBackup after reopen returned seq %d, want > %d", seq, last)
	}
}
