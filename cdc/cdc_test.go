package cdc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ldcd/ldcd/store"
)

func openStore(t *testing.T, name string) *store.Store {
	t.Helper()
	s, err := store.Open(filepath.Join(t.TempDir(), name), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func putRecord(t *testing.T, s *store.Store, index uint64, key, value string) {
	t.Helper()
	rec := store.ChangeRecord{Index: index, Time: time.Now(), Changes: []store.Change{{Op: store.ChangePut, Key: store.GlobalKey([]byte(key)), Value: []byte(value), Version: index}}}
	if err := s.ApplyRecord(rec); err != nil {
		t.Fatal(err)
	}
}

// feedServer serves src's feed over a real socket, with the source's
// commit index and currency set by the test as a replica's would be.
func feedServer(t *testing.T, src *store.Store, commit *atomic.Uint64, notCurrent *atomic.Bool) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var from uint64 = 1
		fmt.Sscan(r.URL.Query().Get("from"), &from)
		ServeFeed(r.Context(), w, src, from, FeedOptions{
			Heartbeat:   50 * time.Millisecond,
			CommitIndex: commit.Load,
			Current: func() error {
				if notCurrent.Load() {
					return errors.New("cut off from its leader")
				}
				return nil
			},
		})
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestFeedRefusedByASourceThatIsNotCurrent(t *testing.T) {
	src := openStore(t, "src.db")
	putRecord(t, src, 1, "k", "v1")
	var commit atomic.Uint64
	var notCurrent atomic.Bool
	notCurrent.Store(true)
	srv := feedServer(t, src, &commit, &notCurrent)

	resp, err := http.Get(srv.URL + "/?from=1")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "cut off from its leader") {
		t.Fatalf("not-current source answered %d %s, want 503 with the reason", resp.StatusCode, body)
	}

	// A stream that is open when the source falls behind ends at the next
	// heartbeat, so its follower moves on.
	notCurrent.Store(false)
	resp, err = http.Get(srv.URL + "/?from=1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("current source answered %d", resp.StatusCode)
	}
	notCurrent.Store(true)
	done := make(chan error, 1)
	go func() { _, err := io.Copy(io.Discard, resp.Body); done <- err }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the stream went on after its source stopped being current")
	}
}

func TestFollowerIsNotCurrentWhileItsSourceTrails(t *testing.T) {
	src := openStore(t, "src.db")
	putRecord(t, src, 1, "k", "v1")
	putRecord(t, src, 2, "k", "v2")
	var commit atomic.Uint64
	var notCurrent atomic.Bool
	commit.Store(10) // the group has committed entries the source has not applied
	srv := feedServer(t, src, &commit, &notCurrent)

	f := StartFollower(FollowerConfig{
		Group:   "global",
		Store:   openStore(t, "copy.db"),
		Sources: func() []string { return []string{strings.TrimPrefix(srv.URL, "http://")} },
	})
	defer f.Close()
	wait := func(what string, cond func(FollowerStatus, time.Duration) bool) (FollowerStatus, time.Duration) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		for {
			st, lag := f.Status(), f.Lag()
			if cond(st, lag) {
				return st, lag
			}
			if ctx.Err() != nil {
				t.Fatalf("timed out waiting for %s: %+v lag %v", what, st, lag)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	_, lag1 := wait("the copy to hold what its source has", func(st FollowerStatus, _ time.Duration) bool {
		return st.Connected && st.AppliedIndex == 2 && st.SourceIndex == 2
	})
	time.Sleep(200 * time.Millisecond) // several heartbeats, each with commit 10 > applied 2
	lag2 := f.Lag()
	if lag1 == 0 || lag2 <= lag1 {
		t.Fatalf("lag %v then %v while the source trails its group: want above zero and growing", lag1, lag2)
	}
	// The source catches up: the next heartbeat finds the copy current.
	commit.Store(2)
	wait("the copy to be current", func(_ FollowerStatus, lag time.Duration) bool { return lag == 0 })
}
