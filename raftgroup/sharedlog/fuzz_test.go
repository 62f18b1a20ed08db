package sharedlog

import (
	"errors"
	"os"
	"testing"

	"github.com/hashicorp/raft"
)

// FuzzOpen opens a log whose newest segment holds arbitrary bytes (after
// an intact older segment, or alone): recovery must not panic, must fail
// only with a CorruptionError or a malformed-record error, and what opens
// must read back without panicking.
func FuzzOpen(f *testing.F) {
	// Seeds: a real segment, cut and damaged in a few ways.
	fsys := newFaultFS()
	l, err := openFS(fsys, crashDir, 1<<20)
	if err != nil {
		f.Fatal(err)
	}
	g, _ := l.Group("g")
	for i := uint64(1); i <= 5; i++ {
		g.StoreLog(entry(i, 1, 40))
	}
	g.SetUint64([]byte("CurrentTerm"), 3)
	g.DeleteRange(1, 2)
	l.Close()
	seg := fsys.names[crashDir+"/"+segName(1)].data
	f.Add(seg, false)
	f.Add(seg[:len(seg)/2], true)
	bad := append([]byte(nil), seg...)
	bad[40] ^= 4
	f.Add(bad, false)
	f.Add(record(recReplace, "g", []byte{1, 1, 'k', 1, 'v', 1, 30}), true)
	f.Fuzz(func(t *testing.T, data []byte, older bool) {
		fsys := newFaultFS()
		fsys.MkdirAll(crashDir)
		seq := uint64(1)
		if older {
			h, _ := fsys.OpenFile(crashDir+"/"+segName(1), os.O_RDWR|os.O_CREATE)
			h.WriteAt(seg, 0)
			seq = 2
		}
		h, _ := fsys.OpenFile(crashDir+"/"+segName(seq), os.O_RDWR|os.O_CREATE)
		h.WriteAt(data, 0)
		l, err := openFS(fsys, crashDir, 64<<10)
		if err != nil {
			var ce *CorruptionError
			if !errors.As(err, &ce) {
				t.Fatalf("open: %v, want a CorruptionError", err)
			}
			return
		}
		defer l.Close()
		for _, g := range l.recovered {
			first, _ := g.FirstIndex()
			last, _ := g.LastIndex()
			for k := uint64(0); k <= last-first && k < 1<<20; k++ { // indexes may wrap
				var e raft.Log
				g.GetLog(first+k, &e)
			}
			g.Get([]byte("CurrentTerm"))
		}
	})
}
