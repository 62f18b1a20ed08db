//go:build failpoints

package sharedlog

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// TestPowerFS: writes are read back before a sync, reach the file only at
// Sync, and are lost with the process before it.
func TestPowerFS(t *testing.T) {
	name := filepath.Join(t.TempDir(), "f")
	f, err := powerFS{}.OpenFile(name, os.O_RDWR|os.O_CREATE)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.WriteAt([]byte("hello"), 0)
	f.WriteAt([]byte("world"), 10)
	b := make([]byte, 15)
	if n, err := f.ReadAt(b, 0); n != 15 || err != nil || !bytes.Equal(b, []byte("hello\x00\x00\x00\x00\x00world")) {
		t.Fatalf("read before sync: %d %v %q", n, err, b)
	}
	if size, _ := f.Size(); size != 15 {
		t.Fatalf("size before sync: %d", size)
	}
	if on, _ := os.ReadFile(name); len(on) != 0 {
		t.Fatalf("unsynced writes reached the file: %q", on)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if on, _ := os.ReadFile(name); !bytes.Equal(on, []byte("hello\x00\x00\x00\x00\x00world")) {
		t.Fatalf("after sync the file holds %q", on)
	}
	f.WriteAt([]byte("X"), 2) // never synced: lost with the process
	if n, _ := f.ReadAt(b[:5], 0); n != 5 || string(b[:5]) != "heXlo" {
		t.Fatalf("read of an unsynced overwrite: %q", b[:5])
	}
	if on, _ := os.ReadFile(name); string(on[:5]) != "hello" {
		t.Fatalf("an unsynced overwrite reached the file: %q", on[:5])
	}
}
