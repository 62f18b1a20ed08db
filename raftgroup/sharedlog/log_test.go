package sharedlog

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

func entry(i uint64, term uint64, size int) *raft.Log {
	return &raft.Log{Index: i, Term: term, Type: raft.LogCommand, Data: bytes.Repeat([]byte{byte(i)}, size)}
}

// checkLog asserts that g holds exactly first..last, entry i carrying term
// terms(i).
func checkLog(t *testing.T, g *GroupLog, first, last uint64, terms func(uint64) uint64, size int) {
	t.Helper()
	if f, _ := g.FirstIndex(); f != first {
		t.Fatalf("%s: first index %d, want %d", g.id, f, first)
	}
	if l, _ := g.LastIndex(); l != last {
		t.Fatalf("%s: last index %d, want %d", g.id, l, last)
	}
	for i := first; i <= last && last > 0; i++ {
		var e raft.Log
		if err := g.GetLog(i, &e); err != nil {
			t.Fatalf("%s: entry %d: %v", g.id, i, err)
		}
		if e.Index != i || e.Term != terms(i) || !bytes.Equal(e.Data, bytes.Repeat([]byte{byte(i)}, size)) {
			t.Fatalf("%s: entry %d read back as index %d term %d (%d bytes)", g.id, i, e.Index, e.Term, len(e.Data))
		}
	}
	if first > 1 {
		var e raft.Log
		if err := g.GetLog(first-1, &e); err != raft.ErrLogNotFound {
			t.Fatalf("%s: entry %d before the first: %v, want ErrLogNotFound", g.id, first-1, err)
		}
	}
}

// TestSharedLog writes the logs of several groups at once into small
// segments, truncates, compacts and drops, lets an idle group be copied
// forward, and checks after each reopen that every log, every stable value
// and nothing more came back, and that old segments were deleted.
func TestSharedLog(t *testing.T) {
	dir := t.TempDir()
	const size = 200
	open := func() *Log {
		l, err := Open(dir, 16<<10)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	l := open()
	group := func(l *Log, id string) *GroupLog {
		g, err := l.Group(id)
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	term1 := func(uint64) uint64 { return 1 }

	// An idle group: ten entries and a vote, then nothing.
	idle := group(l, "idle")
	for i := uint64(1); i <= 10; i++ {
		if err := idle.StoreLog(entry(i, 1, size)); err != nil {
			t.Fatal(err)
		}
	}
	if err := idle.SetUint64([]byte("CurrentTerm"), 7); err != nil {
		t.Fatal(err)
	}
	// Four busy groups append at once, and compact as raft does after a
	// snapshot.
	var wg sync.WaitGroup
	for n := 0; n < 4; n++ {
		g := group(l, fmt.Sprintf("g%d", n))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := uint64(1); i <= 600; i += 3 {
				if err := g.StoreLogs([]*raft.Log{entry(i, 1, size), entry(i+1, 1, size), entry(i+2, 1, size)}); err != nil {
					t.Error(err)
					return
				}
				if i%150 == 1 && i > 150 {
					if err := g.DeleteRange(1, i-100); err != nil {
						t.Error(err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	g0 := group(l, "g0")
	// A conflicting suffix: 591..600 go, 591..595 come back in term 2.
	if err := g0.DeleteRange(591, 600); err != nil {
		t.Fatal(err)
	}
	for i := uint64(591); i <= 595; i++ {
		if err := g0.StoreLog(entry(i, 2, size)); err != nil {
			t.Fatal(err)
		}
	}
	g0terms := func(i uint64) uint64 {
		if i >= 591 {
			return 2
		}
		return 1
	}
	if err := l.Drop("g3"); err != nil {
		t.Fatal(err)
	}
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	// About 600 KiB written in 16 KiB segments: without deletion there
	// would be about 40. The busy groups' last 100 entries stay where
	// they were written (only idle groups are copied forward), which
	// keeps the segments they span.
	if len(segs) > 20 {
		t.Fatalf("%d segments left, want old ones deleted", len(segs))
	}
	check := func(l *Log) {
		t.Helper()
		checkLog(t, group(l, "idle"), 1, 10, term1, size)
		if v, err := group(l, "idle").GetUint64([]byte("CurrentTerm")); err != nil || v != 7 {
			t.Fatalf("idle's CurrentTerm: %d %v", v, err)
		}
		checkLog(t, group(l, "g0"), 352, 595, g0terms, size)
		for _, id := range []string{"g1", "g2"} {
			checkLog(t, group(l, id), 352, 600, term1, size)
		}
		checkLog(t, group(l, "g3"), 0, 0, term1, size)
		if _, err := group(l, "g3").Get([]byte("CurrentTerm")); err == nil || err.Error() != "not found" {
			t.Fatalf("a dropped group's stable key: %v, want not found", err)
		}
	}
	check(l)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l = open()
	check(l)

	// A torn tail (a write a crash cut short) is cut off; what was
	// acknowledged stays.
	l.Close()
	appendToLastSegment(t, dir, record(recEntries, "g1", []byte{1, 2, 3})[:9])
	l = open()
	check(l)
	if err := group(l, "g1").StoreLog(entry(601, 1, size)); err != nil {
		t.Fatal(err)
	}
	l.Close()
	l = open()
	checkLog(t, group(l, "g1"), 352, 601, term1, size)
	l.Close()

	// So is a zero-filled tail: after a power cut the file's new size can
	// reach the disk before the data written into it, and 8 zero bytes
	// read as a record of length 0 whose checksum matches.
	appendToLastSegment(t, dir, make([]byte, 4096))
	l = open()
	checkLog(t, group(l, "g1"), 352, 601, term1, size)
	if err := group(l, "g1").StoreLog(entry(602, 1, size)); err != nil {
		t.Fatal(err)
	}
	l.Close()
	l = open()
	checkLog(t, group(l, "g1"), 352, 602, term1, size)
	l.Close()

	// A bad record in an older segment is corruption: refused.
	segs, _ = filepath.Glob(filepath.Join(dir, "*.seg"))
	if len(segs) > 1 {
		b, _ := os.ReadFile(segs[0])
		b[10] ^= 0xff
		os.WriteFile(segs[0], b, 0o600)
		var ce *CorruptionError
		if _, err := Open(dir, 16<<10); !errors.As(err, &ce) || ce.File != segs[0] || ce.Offset != 0 {
			t.Fatalf("a corrupt older segment: %v, want a CorruptionError at offset 0 of %s", err, segs[0])
		}
	}
}

// appendToLastSegment writes b at the end of the newest segment in dir, as
// a crash mid-write would leave it.
func appendToLastSegment(t *testing.T, dir string, b []byte) {
	t.Helper()
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	f, err := os.OpenFile(segs[len(segs)-1], os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
}

// TestSharedLogRestarts: an entry not adjacent to the log (raft does not
// write one: it empties a monotonic log after installing a snapshot) starts
// the log again there, and replay says the same.
func TestSharedLogRestarts(t *testing.T) {
	dir := t.TempDir()
	l, err := Open(dir, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	g, _ := l.Group("g")
	for i := uint64(1); i <= 5; i++ {
		if err := g.StoreLog(entry(i, 1, 10)); err != nil {
			t.Fatal(err)
		}
	}
	if err := g.StoreLog(entry(100, 1, 10)); err != nil {
		t.Fatal(err)
	}
	one := func(uint64) uint64 { return 1 }
	checkLog(t, g, 100, 100, one, 10)
	l.Close()
	if l, err = Open(dir, 1<<20); err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	g, _ = l.Group("g")
	checkLog(t, g, 100, 100, one, 10)
	if !g.IsMonotonic() {
		t.Fatal("the shared log must tell raft it is monotonic")
	}
}

// TestSharedLogPreallocates: once the active segment is half full a spare
// segment of zeros is written, the next rotation puts it in place, and a
// log that stops without a clean close (preallocated zeros after its last
// record) opens with everything acknowledged and goes on after it.
func TestSharedLogPreallocates(t *testing.T) {
	dir := t.TempDir()
	const segSize, size = 64 << 10, 1000
	// What a crash mid-way through writing a spare leaves is made again.
	if err := os.WriteFile(filepath.Join(dir, spareName), []byte("half a spare"), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := Open(dir, segSize)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, spareName)); !os.IsNotExist(err) {
		t.Fatalf("a spare left by a crash survived opening: %v", err)
	}
	g, _ := l.Group("g")
	one := func(uint64) uint64 { return 1 }
	var i uint64
	for i = 1; l.end < segSize/2+size; i++ {
		if err := g.StoreLog(entry(i, 1, size)); err != nil {
			t.Fatal(err)
		}
	}
	spareReady := func() logFile {
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			l.spareMu.Lock()
			f := l.spare
			l.spareMu.Unlock()
			if f != nil {
				return f
			}
			time.Sleep(5 * time.Millisecond)
		}
		t.Fatal("no spare segment written after the active one passed half its size")
		return nil
	}
	spareReady()
	b, err := os.ReadFile(filepath.Join(dir, spareName))
	if err != nil || len(b) != segSize || !allZero(b) {
		t.Fatalf("spare: %d bytes, all zero %v, err %v; want %d zero bytes", len(b), allZero(b), err, segSize)
	}
	// Fill the segment: the next write rotates into the spare.
	for seg := l.active; l.active == seg; i++ {
		if err := g.StoreLog(entry(i, 1, size)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, spareName)); !os.IsNotExist(err) {
		t.Fatalf("the spare is still there after a rotation: %v", err)
	}
	fi, err := os.Stat(filepath.Join(dir, segName(l.active)))
	if err != nil || fi.Size() != segSize {
		t.Fatalf("new segment: %v, %v; want the spare's %d bytes", fi, err, segSize)
	}
	last := i - 1
	checkLog(t, g, 1, last, one, size)

	// Stop as a crash would: no trim, the spare (if any) left behind.
	l.opened = false
	l.Close()
	if l, err = Open(dir, segSize); err != nil {
		t.Fatalf("reopen after a stop with zeros past the last record: %v", err)
	}
	g, _ = l.Group("g")
	checkLog(t, g, 1, last, one, size)
	for j := 0; j < 3; j++ {
		last++
		if err := g.StoreLog(entry(last, 1, size)); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	// A clean close leaves no zeros after the last record.
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	if b, _ := os.ReadFile(segs[len(segs)-1]); len(b) == 0 || allZero(b[len(b)-8:]) {
		t.Fatalf("the active segment ends in zeros after a clean close (%d bytes)", len(b))
	}
	// Zeros after the records of an older segment are unused space, not
	// corruption.
	f, err := os.OpenFile(segs[0], os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write(make([]byte, 4096))
	f.Close()
	if l, err = Open(dir, segSize); err != nil {
		t.Fatalf("an older segment with a zero tail: %v", err)
	}
	defer l.Close()
	g, _ = l.Group("g")
	checkLog(t, g, 1, last, one, size)
}
