package raftgroup

import (
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

// TestSnapshotFilesPrivate: a group's snapshot files (state.bin,
// meta.json) are 0600 and every directory on the way to them 0700, so
// another local user cannot read the data (they were 0644 and 0755).
func TestSnapshotFilesPrivate(t *testing.T) {
	nodes := []*testNode{startNode(t, "n1", t.TempDir(), "", nil)}
	bootstrap(t, nodes, "g1")
	applyRetry(t, nodes, "g1", putCmd("k", "secret"))
	g, _ := nodes[0].h.Group("g1")
	if err := g.Raft().Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	dataDir := nodes[0].dir
	for _, d := range []string{dataDir, filepath.Join(dataDir, "groups"), filepath.Join(dataDir, "groups", "g1")} {
		if fi, err := os.Stat(d); err != nil || fi.Mode().Perm() != 0o700 {
			t.Errorf("%s: %v %v, want 0700", d, fi.Mode().Perm(), err)
		}
	}
	snaps := filepath.Join(dataDir, "groups", "g1", "snapshots")
	files := 0
	err := filepath.WalkDir(snaps, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		want := fs.FileMode(0o600)
		if d.IsDir() {
			want = 0o700
		} else {
			files++
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s: %v, want %v", p, fi.Mode().Perm(), want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 2 {
		t.Fatalf("%d snapshot files found, want state.bin and meta.json at least", files)
	}
}
