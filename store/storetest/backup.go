package storetest

import (
	"context"
	"testing"

	"github.com/praas-dev/praas/store"
)

// testBackupSeqAfterTrim: a process records the highest queue sequence it
// consumed and drops anything at or below it, so a sequence must never be
// assigned twice, even once the queue was trimmed empty (bbolt's
// NextSequence would start over in a recreated bucket).
func testBackupSeqAfterTrim(t *testing.T, ctx context.Context, m store.Metadata) {
	must(t, "CreateApp", m.CreateApp(ctx, newApp("web")))
	createProcess(t, ctx, m, newProcess("web", "p1"))
	var last uint64
	for round := range 3 {
		for i := range 3 {
			seq, err := m.AppendBackup(ctx, "web", "p1", newMessage(i))
			must(t, "AppendBackup", err)
			if seq <= last {
				t.Fatalf("round %d: AppendBackup returned seq %d after %d", round, seq, last)
			}
			last = seq
		}
		must(t, "TrimBackup", m.TrimBackup(ctx, "web", "p1", last))
		msgs, err := m.ListBackup(ctx, "web", "p1")
		must(t, "ListBackup", err)
		diff(t, "ListBackup after trimming all", msgs, []store.Message{})
	}
}

// testBackupStats: BackupStats counts the messages and their data bytes
// through appends and trims, per queue.
func testBackupStats(t *testing.T, ctx context.Context, m store.Metadata) {
	must(t, "CreateApp", m.CreateApp(ctx, newApp("web")))
	createProcess(t, ctx, m, newProcess("web", "p1"))
	createProcess(t, ctx, m, newProcess("web", "p2"))
	stats := func(pid string) store.QueueStats {
		t.Helper()
		st, err := m.BackupStats(ctx, "web", pid)
		must(t, "BackupStats", err)
		return st
	}
	diff(t, "stats of an empty queue", stats("p1"), store.QueueStats{})
	diff(t, "stats of an absent process", func() store.QueueStats {
		st, err := m.BackupStats(ctx, "web", "nope")
		must(t, "BackupStats of an absent process", err)
		return st
	}(), store.QueueStats{})
	var seqs []uint64
	for _, n := range []int{10, 0, 1000, 7} {
		seq, err := m.AppendBackup(ctx, "web", "p1", store.Message{Src: "s", Key: "k", Data: make([]byte, n)})
		must(t, "AppendBackup", err)
		seqs = append(seqs, seq)
	}
	_, err := m.AppendBackup(ctx, "web", "p2", store.Message{Key: "k", Data: make([]byte, 5)})
	must(t, "AppendBackup p2", err)
	diff(t, "stats after appends", stats("p1"), store.QueueStats{Messages: 4, Bytes: 1017})
	must(t, "TrimBackup", m.TrimBackup(ctx, "web", "p1", seqs[2]))
	diff(t, "stats after a trim", stats("p1"), store.QueueStats{Messages: 1, Bytes: 7})
	must(t, "TrimBackup again", m.TrimBackup(ctx, "web", "p1", seqs[2]))
	diff(t, "stats after the same trim again", stats("p1"), store.QueueStats{Messages: 1, Bytes: 7})
	must(t, "TrimBackup all", m.TrimBackup(ctx, "web", "p1", seqs[3]))
	diff(t, "stats after trimming all", stats("p1"), store.QueueStats{})
	diff(t, "stats of another queue", stats("p2"), store.QueueStats{Messages: 1, Bytes: 5})
	must(t, "DeleteProcess", m.DeleteProcess(ctx, "web", "p2"))
	createProcess(t, ctx, m, newProcess("web", "p2"))
	diff(t, "stats of a process created again", stats("p2"), store.QueueStats{})
}
