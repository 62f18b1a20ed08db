package store

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/hashicorp/raft"
)

func setBootID(t *testing.T, id string) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "boot_id")
	if err := os.WriteFile(p, []byte(id+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	old := bootIDPath
	bootIDPath = p
	t.Cleanup(func() { bootIDPath = old })
}

// copyFiles copies a store's files while it is open: what a disk would hold
// if the process died now (the page cache is shared, so this is what a
// process crash leaves behind).
func copyFiles(t *testing.T, from, to string) {
	t.Helper()
	for _, name := range []string{"state.db", "state.db.boot"} {
		b, err := os.ReadFile(filepath.Join(from, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// TestNoSyncDistrustsAFileLeftOpenAcrossAReboot: a NoSync state machine that
// was not closed is trusted after a process crash (same boot), discarded
// after a machine crash (another boot), and trusted after a clean close
// whatever the boot.
func TestNoSyncDistrustsAFileLeftOpenAcrossAReboot(t *testing.T) {
	setBootID(t, "boot-1")
	dir := t.TempDir()
	s, err := Open(filepath.Join(dir, "state.db"), Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	s.ApplyBatch([]*raft.Log{logOf(1, put("k", "one")), logOf(2, put("k", "two"))})
	crashed := t.TempDir()
	copyFiles(t, dir, crashed)

	reopen := func(dir string) *Store {
		t.Helper()
		s, err := Open(filepath.Join(dir, "state.db"), Options{NoSync: true})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	// A process crash: same boot, the state is kept.
	same := t.TempDir()
	copyFiles(t, crashed, same)
	r := reopen(same)
	if r.Discarded || r.AppliedIndex() != 2 {
		t.Fatalf("after a process crash: discarded=%v applied=%d, want kept at 2", r.Discarded, r.AppliedIndex())
	}
	r.Close()

	// A machine crash: another boot, the file is set aside and the state
	// starts empty (raft rebuilds it from the snapshot and the log).
	setBootID(t, "boot-2")
	r = reopen(crashed)
	if !r.Discarded || r.AppliedIndex() != 0 {
		t.Fatalf("after a machine crash: discarded=%v applied=%d, want discarded", r.Discarded, r.AppliedIndex())
	}
	if _, err := os.Stat(filepath.Join(crashed, "state.db.torn")); err != nil {
		t.Fatalf("the distrusted file was not kept aside: %v", err)
	}
	r.Close()

	// A clean close syncs and marks the file: trusted after a reboot.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	setBootID(t, "boot-3")
	r = reopen(dir)
	defer r.Close()
	if r.Discarded || r.AppliedIndex() != 2 {
		t.Fatalf("after a clean close: discarded=%v applied=%d, want kept at 2", r.Discarded, r.AppliedIndex())
	}
}
