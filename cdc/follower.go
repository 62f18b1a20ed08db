package cdc

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/ldcd/ldcd/client"
	"github.com/ldcd/ldcd/store"
)

// FollowerConfig configures a Follower.
type FollowerConfig struct {
	// Group is the group to follow (the global group for a CZone node).
	Group string
	// Store is the local copy; the follower owns writes to it.
	Store *store.Store
	// Sources returns candidate source HTTP addresses, best first: a
	// global voter, or another CZone node (cascading). It is called before
	// each connection.
	Sources func() []string
	HTTP    *http.Client
	Logger  *slog.Logger
	// OnApply, if set, is called with each applied record's replication
	// lag (now minus the leader's append time).
	OnApply func(lag time.Duration)
}

// FollowerStatus reports a follower's progress.
type FollowerStatus struct {
	Group        string `json:"group"`
	Source       string `json:"source"`
	Connected    bool   `json:"connected"`
	AppliedIndex uint64 `json:"applied_index"`
	// SourceIndex is the source's applied index at its last heartbeat.
	SourceIndex uint64 `json:"source_index"`
	// LagIndex is how many entries the copy trails the source by;
	// LagMs is 0 while the copy holds everything its group has
	// committed (as of the source's last heartbeat), and otherwise how
	// old the newest change it holds is (or how long since it was last
	// current), growing while nothing arrives.
	LagIndex  uint64 `json:"lag_index"`
	LagMs     int64  `json:"lag_ms"`
	Snapshots int    `json:"snapshots"`
}

// Follower keeps a local copy of a group by following its change feed.
type Follower struct {
	cfg    FollowerConfig
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex // guards status, behindSince, currentAt and unknown
	status FollowerStatus
	// behindSince is zero while the copy is known to be current (its
	// source's last heartbeat found it holding everything the group had
	// committed); otherwise the append time of the newest change it holds,
	// or when it was last known current: its lag grows from there.
	behindSince time.Time
	currentAt   time.Time // when a heartbeat last found the copy current
	// unknown is set at each connection until the first record or
	// heartbeat tells how current the copy is.
	unknown bool
}

// StartFollower starts following. Close stops it.
func StartFollower(cfg FollowerConfig) *Follower {
	if cfg.HTTP == nil {
		cfg.HTTP = &http.Client{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	f := &Follower{cfg: cfg, cancel: cancel}
	f.status.Group = cfg.Group
	f.status.AppliedIndex = cfg.Store.AppliedIndex()
	f.wg.Add(1)
	go f.run(ctx)
	return f
}

// Close stops the follower and waits for it.
func (f *Follower) Close() {
	f.cancel()
	f.wg.Wait()
}

// Status returns the follower's progress.
func (f *Follower) Status() FollowerStatus {
	f.mu.Lock()
	defer f.mu.Unlock()
	st := f.status
	if !f.behindSince.IsZero() {
		st.LagMs = max(time.Since(f.behindSince).Milliseconds(), 0)
	}
	st.AppliedIndex = f.cfg.Store.AppliedIndex()
	if st.SourceIndex > st.AppliedIndex {
		st.LagIndex = st.SourceIndex - st.AppliedIndex
	} else {
		st.LagIndex = 0
	}
	return st
}

// Lag returns how stale the copy may be: zero when the source's last
// heartbeat found it holding everything the group had committed; otherwise
// the age of the newest change it holds (or of the moment it was last
// current), which grows while nothing arrives; unbounded while disconnected.
func (f *Follower) Lag() time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case !f.status.Connected || f.unknown:
		return time.Duration(1<<63 - 1)
	case f.behindSince.IsZero():
		return 0
	default:
		return max(time.Since(f.behindSince), 0)
	}
}

func (f *Follower) setStatus(fn func(*FollowerStatus)) {
	f.mu.Lock()
	fn(&f.status)
	f.mu.Unlock()
}

var errGone = errors.New("cdc: source no longer holds the changes needed")

func (f *Follower) run(ctx context.Context) {
	defer f.wg.Done()
	backoff := 100 * time.Millisecond
	try := 0
	for ctx.Err() == nil {
		sources := f.cfg.Sources()
		if len(sources) == 0 {
			f.setStatus(func(s *FollowerStatus) { s.Connected = false; s.Source = "" })
			if !sleep(ctx, time.Second) {
				return
			}
			continue
		}
		src := sources[try%len(sources)]
		err := f.stream(ctx, src)
		if errors.Is(err, errGone) {
			f.cfg.Logger.Info("cdc follower catching up from a snapshot", "group", f.cfg.Group, "source", src, "applied_index", f.cfg.Store.AppliedIndex())
			err = f.snapshot(ctx, src)
			if err == nil {
				backoff = 100 * time.Millisecond
				continue
			}
		}
		if ctx.Err() != nil {
			return
		}
		f.setStatus(func(s *FollowerStatus) { s.Connected = false })
		f.cfg.Logger.Debug("cdc source failed, trying the next", "group", f.cfg.Group, "source", src, "error", err)
		try++ // the next source
		if !sleep(ctx, backoff) {
			return
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}

// silence bounds how long a connected source may say nothing (heartbeats
// come every second).
const silence = 5 * time.Second

func (f *Follower) stream(ctx context.Context, src string) error {
	from := f.cfg.Store.AppliedIndex() + 1
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	u, resp, err := f.get(sctx, src, "?from="+strconv.FormatUint(from, 10))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusGone:
		return errGone
	default:
		return fmt.Errorf("cdc: %s: status %d", u, resp.StatusCode)
	}
	f.mu.Lock()
	f.status.Source, f.status.Connected, f.unknown = src, true, true
	f.mu.Unlock()
	// A source that goes quiet (paused, partitioned) is abandoned.
	alive := make(chan struct{}, 1)
	go func() {
		t := time.NewTimer(silence)
		defer t.Stop()
		for {
			select {
			case <-sctx.Done():
				return
			case <-alive:
				t.Reset(silence)
			case <-t.C:
				cancel()
				return
			}
		}
	}()
	// A reader goroutine decodes lines; this loop applies whatever has
	// arrived in one transaction (a catch-up applies hundreds at a time).
	events := make(chan client.ChangeEvent, applyBatch)
	readErr := make(chan error, 1)
	go func() {
		defer close(events)
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 64<<20)
		for sc.Scan() {
			var ev client.ChangeEvent
			if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
				readErr <- err
				return
			}
			select {
			case events <- ev:
			case <-sctx.Done():
				return
			}
		}
		if err := sc.Err(); err != nil {
			readErr <- err
			return
		}
		readErr <- fmt.Errorf("cdc: %s ended the feed", src)
	}()
	for ev := range events {
		select {
		case alive <- struct{}{}:
		default:
		}
		batch := []client.ChangeEvent{ev}
	fill:
		for len(batch) < applyBatch {
			select {
			case e, ok := <-events:
				if !ok {
					break fill
				}
				batch = append(batch, e)
			default:
				break fill
			}
		}
		var recs []store.ChangeRecord
		var heartbeat *client.ChangeEvent
		for i := range batch {
			if batch[i].Heartbeat {
				heartbeat = &batch[i]
				continue
			}
			rec, err := RecordOf(batch[i])
			if err != nil {
				return err
			}
			recs = append(recs, rec)
		}
		if len(recs) > 0 {
			if err := f.cfg.Store.ApplyRecords(recs); err != nil {
				return err
			}
			now := time.Now()
			f.mu.Lock()
			f.behindSince, f.unknown = recs[len(recs)-1].Time, false
			f.mu.Unlock()
			if f.cfg.OnApply != nil {
				for _, r := range recs {
					f.cfg.OnApply(now.Sub(r.Time))
				}
			}
		}
		if heartbeat != nil {
			// Every change up to its index has been sent: the copy is at
			// that index even if the last entries changed no data.
			if err := f.cfg.Store.AdvanceApplied(heartbeat.Index); err != nil {
				return err
			}
			// The copy is current only if the source itself holds all
			// its group has committed (a replica still catching up does
			// not).
			current := f.cfg.Store.AppliedIndex() >= heartbeat.Index && heartbeat.CommitIndex <= heartbeat.Index
			f.mu.Lock()
			f.status.SourceIndex, f.unknown = heartbeat.Index, false
			switch {
			case current:
				f.behindSince, f.currentAt = time.Time{}, time.Now()
			case f.behindSince.IsZero():
				f.behindSince = f.currentAt
				if f.behindSince.IsZero() {
					f.behindSince = time.Now()
				}
			}
			f.mu.Unlock()
		}
	}
	select {
	case err := <-readErr:
		return err
	default:
		return sctx.Err()
	}
}

// get requests the group's feed (suffix "?from=N") or snapshot (suffix
// "/snapshot") at src and returns the URL it asked, for errors.
func (f *Follower) get(ctx context.Context, src, suffix string) (string, *http.Response, error) {
	u := "http://" + src + "/v1/changes/" + url.PathEscape(f.cfg.Group) + suffix
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return u, nil, err
	}
	resp, err := f.cfg.HTTP.Do(req)
	return u, resp, err
}

// applyBatch bounds the records a follower applies in one transaction.
const applyBatch = 512

// snapshot replaces the copy with the source's snapshot.
func (f *Follower) snapshot(ctx context.Context, src string) error {
	u, resp, err := f.get(ctx, src, "/snapshot")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("cdc: %s: status %d", u, resp.StatusCode)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	if !sc.Scan() {
		return fmt.Errorf("cdc: %s: empty snapshot", u)
	}
	var hdr client.SnapshotHeader
	if err := json.Unmarshal(sc.Bytes(), &hdr); err != nil || !hdr.Snapshot {
		return fmt.Errorf("cdc: %s: bad snapshot header", u)
	}
	complete := false
	count := 0
	err = f.cfg.Store.LoadSnapshot(hdr.Index, func() (store.KV, bool, error) {
		if !sc.Scan() {
			if err := sc.Err(); err != nil {
				return store.KV{}, false, err
			}
			return store.KV{}, false, fmt.Errorf("cdc: %s: snapshot cut short", u)
		}
		line := sc.Bytes()
		var end client.SnapshotEnd
		if json.Unmarshal(line, &end) == nil && end.End {
			if end.Count != count || end.Index != hdr.Index {
				return store.KV{}, false, fmt.Errorf("cdc: %s: snapshot of %d keys at %d ended with %d at %d", u, count, hdr.Index, end.Count, end.Index)
			}
			complete = true
			return store.KV{}, false, nil
		}
		var kc client.KeyChange
		if err := json.Unmarshal(line, &kc); err != nil {
			return store.KV{}, false, err
		}
		c, err := changeOf(kc)
		if err != nil {
			return store.KV{}, false, err
		}
		count++
		return store.KV{Key: c.Key, Value: c.Value, Version: c.Version}, true, nil
	})
	if err != nil {
		return err
	}
	if !complete {
		return fmt.Errorf("cdc: %s: incomplete snapshot", u)
	}
	f.setStatus(func(s *FollowerStatus) { s.Snapshots++ })
	f.cfg.Logger.Info("cdc follower loaded a snapshot", "group", f.cfg.Group, "source", src, "index", hdr.Index, "keys", count)
	return nil
}

// RecordOf converts a feed event back to a store record.
func RecordOf(ev client.ChangeEvent) (store.ChangeRecord, error) {
	rec := store.ChangeRecord{Index: ev.Index, Time: ev.Time}
	for _, kc := range ev.Changes {
		c, err := changeOf(kc)
		if err != nil {
			return rec, err
		}
		rec.Changes = append(rec.Changes, c)
	}
	return rec, nil
}

func changeOf(kc client.KeyChange) (store.Change, error) {
	c := store.Change{Op: kc.Op, Version: kc.Version}
	switch kc.Space {
	case "user":
		if kc.UID == nil {
			return c, errors.New("cdc: user change without a uid")
		}
		c.Key = append([]byte{'u'}, binary.BigEndian.AppendUint64(nil, *kc.UID)...)
		c.Key = append(c.Key, kc.Key...)
	case "global":
		c.Key = store.GlobalKey([]byte(kc.Key))
	case "system":
		c.Key = store.SystemKey(kc.Key)
	default:
		return c, fmt.Errorf("cdc: unknown key space %q", kc.Space)
	}
	c.Value = []byte(kc.Value)
	if kc.ValueBase64 != "" {
		v, err := base64.StdEncoding.DecodeString(kc.ValueBase64)
		if err != nil {
			return c, err
		}
		c.Value = v
	}
	return c, nil
}
