package sharedlog

import (
	"errors"
	"fmt"
	"sync"
	"syscall"
	"testing"

	"github.com/hashicorp/raft"
)

// TestSharedLogFailStop: a write or an fsync of the shared log that fails
// stops it for good. The writes waiting get the error, and every later
// append, delete and stable-store write gets it at once without touching
// a file (no second fsync: after a failed one the page cache is not
// trusted); Err says so. What was acknowledged before survives a crash,
// and what was answered with an error is never there only in part.
func TestSharedLogFailStop(t *testing.T) {
	for _, c := range []struct {
		call string // which call of the failing write fails
		err  error
	}{
		{"write", syscall.EIO},
		{"sync", syscall.EIO},
		{"write", syscall.ENOSPC},
		{"sync", syscall.ENOSPC},
	} {
		t.Run(fmt.Sprintf("%s %v", c.call, c.err), func(t *testing.T) {
			fsys := newFaultFS()
			l, err := openFS(fsys, crashDir, 1<<20)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			ids := []string{"a", "b", "c", "d"}
			for _, id := range ids {
				g, _ := l.Group(id)
				for i := uint64(1); i <= 5; i++ {
					if err := g.StoreLog(entry(i, 1, 50)); err != nil {
						t.Fatal(err)
					}
				}
			}
			if l.Err() != nil {
				t.Fatalf("Err before any failure: %v", l.Err())
			}
			// The next write fails at its write (the call after now) or
			// its sync (the one after that).
			fsys.failAt, fsys.failErr = fsys.calls+1, c.err
			if c.call == "sync" {
				fsys.failAt++
			}
			// Four groups append at once: one batch or several, each
			// answered nil only if it is durable.
			errs := make([]error, len(ids))
			var wg sync.WaitGroup
			for k, id := range ids {
				wg.Add(1)
				go func() {
					defer wg.Done()
					g, _ := l.Group(id)
					errs[k] = g.StoreLog(entry(6, 1, 50))
				}()
			}
			wg.Wait()
			failed := 0
			for _, err := range errs {
				if err != nil {
					failed++
					if !errors.Is(err, ErrFailed) || !errors.Is(err, c.err) {
						t.Fatalf("a failed append: %v, want ErrFailed and %v", err, c.err)
					}
				}
			}
			if failed == 0 {
				t.Fatal("no append saw the failure")
			}
			if err := l.Err(); !errors.Is(err, ErrFailed) || !errors.Is(err, c.err) {
				t.Fatalf("Err after a failure: %v", err)
			}
			calls := fsys.calls
			g, _ := l.Group("a")
			for _, op := range []func() error{
				func() error { return g.StoreLog(entry(7, 1, 50)) },
				func() error { return g.StoreLogs([]*raft.Log{entry(7, 1, 50)}) },
				func() error { return g.DeleteRange(1, 2) },
				func() error { return g.SetUint64([]byte("CurrentTerm"), 5) },
				func() error { return l.Drop("b") },
			} {
				if err := op(); !errors.Is(err, ErrFailed) {
					t.Fatalf("a write after the failure: %v, want ErrFailed", err)
				}
			}
			if fsys.calls != calls {
				t.Fatalf("the failed log made %d more file calls: %v", fsys.calls-calls, fsys.trace[calls:])
			}
			if err := l.Close(); !errors.Is(err, ErrFailed) {
				t.Fatalf("close of a failed log: %v, want ErrFailed", err)
			}
			// What was acknowledged is there after a crash, whatever the
			// disk kept of the failed write.
			for _, tr := range []tear{tearDrop, tearAll} {
				l2, err := openFS(fsys.crashImage(tr, nil), crashDir, 1<<20)
				if err != nil {
					t.Fatalf("%v: reopen: %v", tr, err)
				}
				for k, id := range ids {
					g, _ := l2.Group(id)
					last := uint64(5)
					if errs[k] == nil {
						last = 6
					}
					got, _ := g.LastIndex()
					if got < last || got > 6 {
						t.Fatalf("%v: %s ends at %d, want %d acknowledged (or 6)", tr, id, got, last)
					}
					checkLog(t, g, 1, got, func(uint64) uint64 { return 1 }, 50)
				}
				l2.Close()
			}
		})
	}
}
