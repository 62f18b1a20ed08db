package cdc

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"net/http"
	"time"
	"unicode/utf8"

	"github.com/ldcd/ldcd/client"
	"github.com/ldcd/ldcd/store"
)

// Source is what a feed needs of a group's local replica (a *store.Store).
// Its methods may be called from any goroutine.
type Source interface {
	// Changes returns up to limit records from index from, and the
	// applied index; a *store.CompactedError if they are gone.
	Changes(from uint64, limit int) ([]store.ChangeRecord, uint64, error)
	// AppliedChan returns a channel closed at the next applied batch.
	AppliedChan() <-chan struct{}
}

// feedBatch bounds the records read per round.
const feedBatch = 512

// KeyChangeOf converts a stored change to its public form.
func KeyChangeOf(c store.Change) client.KeyChange {
	kc := client.KeyChange{Op: c.Op, Version: c.Version}
	k := c.Key
	switch {
	case len(k) >= 9 && k[0] == 'u':
		uid := binary.BigEndian.Uint64(k[1:9])
		kc.Space, kc.UID, kc.Key = "user", &uid, string(k[9:])
	case len(k) >= 1 && k[0] == 'g':
		kc.Space, kc.Key = "global", string(k[1:])
	case len(k) >= 1 && k[0] == 's':
		kc.Space, kc.Key = "system", string(k[1:])
	}
	if c.Op == store.ChangePut {
		if utf8.Valid(c.Value) {
			kc.Value = string(c.Value)
		} else {
			kc.ValueBase64 = base64.StdEncoding.EncodeToString(c.Value)
		}
	}
	return kc
}

// FeedOptions are what ServeFeed needs besides the source.
type FeedOptions struct {
	// Heartbeat is how often a quiet feed reports progress.
	Heartbeat time.Duration
	// CommitIndex, if set, is the group's commit index as this replica
	// knows it; heartbeats carry it so a follower can tell a source that
	// trails its group from one that is caught up.
	CommitIndex func() uint64
	// Current, if set, says whether the source's data is current (a
	// replica in touch with its leader). A source that is not answers 503
	// at the start and ends the stream at the next heartbeat, so that
	// followers move to a source that is.
	Current func() error
}

// ServeFeed streams src's changes from index from as NDJSON, flushing each
// batch, with a heartbeat line every opts.Heartbeat while nothing changes. It
// returns when ctx ends or the source fails. A from older than the kept
// changes answers 410 Gone with the oldest index.
func ServeFeed(ctx context.Context, w http.ResponseWriter, src Source, from uint64, opts FeedOptions) error {
	current := opts.Current
	if current == nil {
		current = func() error { return nil }
	}
	commitIndex := opts.CommitIndex
	if commitIndex == nil {
		commitIndex = func() uint64 { return 0 }
	}
	if err := current(); err != nil {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(http.StatusServiceUnavailable)
		return json.NewEncoder(w).Encode(client.ErrorBody{Error: err.Error() + "; follow another replica"})
	}
	if _, _, err := src.Changes(from, 1); err != nil {
		var ce *store.CompactedError
		if errors.As(err, &ce) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusGone)
			return json.NewEncoder(w).Encode(client.GoneBody{Error: ce.Error() + "; start from GET /v1/changes/{group}/snapshot", Oldest: ce.Oldest})
		}
		return err
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	enc := json.NewEncoder(w)
	flush := func() {
		if flusher != nil {
			flusher.Flush()
		}
	}
	flush()
	tick := time.NewTicker(opts.Heartbeat)
	defer tick.Stop()
	for {
		next := src.AppliedChan() // before reading, so no batch is missed
		recs, applied, err := src.Changes(from, feedBatch)
		if err != nil {
			return err // compacted under a slow reader, or closed: the client resumes
		}
		for _, r := range recs {
			ev := client.ChangeEvent{Index: r.Index, Time: r.Time.UTC(), Changes: make([]client.KeyChange, len(r.Changes))}
			for i, c := range r.Changes {
				ev.Changes[i] = KeyChangeOf(c)
			}
			if err := enc.Encode(ev); err != nil {
				return err
			}
			from = r.Index + 1
		}
		if len(recs) > 0 {
			flush()
		}
		if len(recs) == feedBatch {
			continue
		}
		select {
		case <-ctx.Done():
			return nil
		case <-next:
		case <-tick.C:
			if err := current(); err != nil {
				return err // the follower moves to another source
			}
			ev := client.ChangeEvent{Index: applied, Time: time.Now().UTC(), Heartbeat: true, CommitIndex: commitIndex()}
			if err := enc.Encode(ev); err != nil {
				return err
			}
			flush()
		}
	}
}

// ServeSnapshot writes a consistent snapshot of src as NDJSON: a header
// with the index it is consistent with, one "put" line per key (prefix
// limits which), and an end line.
func ServeSnapshot(w http.ResponseWriter, s *store.Store, prefix []byte) error {
	w.Header().Set("Content-Type", "application/x-ndjson")
	enc := json.NewEncoder(w)
	var index uint64
	n := 0
	err := s.SnapshotKV(prefix, func(applied uint64) error {
		index = applied
		w.WriteHeader(http.StatusOK)
		return enc.Encode(client.SnapshotHeader{Snapshot: true, Index: applied})
	}, func(kv store.KV) error {
		n++
		return enc.Encode(KeyChangeOf(store.Change{Op: store.ChangePut, Key: kv.Key, Value: kv.Value, Version: kv.Version}))
	})
	if err != nil {
		return err
	}
	return enc.Encode(client.SnapshotEnd{End: true, Index: index, Count: n})
}
