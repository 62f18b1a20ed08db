package client

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// ErrCompacted is returned (inside a *CompactedError) by Watch when the
// feed no longer holds the changes it needs: start again from a snapshot.
var ErrCompacted = errors.New("ldcd: changes no longer kept")

// CompactedError names the oldest index the feed still holds.
type CompactedError struct{ Oldest uint64 }

func (e *CompactedError) Error() string {
	return fmt.Sprintf("ldcd: changes are kept from index %d only", e.Oldest)
}

// Is makes errors.Is(err, ErrCompacted) true.
func (e *CompactedError) Is(target error) bool { return target == ErrCompacted }

// WatchEvent is a change (or heartbeat) from Watch, or the error that ended
// it.
type WatchEvent struct {
	ChangeEvent
	Err error
}

// Watch follows group's change feed from index from (1: from the start),
// resuming after connection failures from the last index seen, so each
// change is delivered exactly once and in order. Heartbeats are delivered
// too (Heartbeat set). The channel closes when ctx ends, after a final
// event with Err set if the feed no longer holds the next change
// (ErrCompacted).
func (c *Client) Watch(ctx context.Context, group string, from uint64) <-chan WatchEvent {
	out := make(chan WatchEvent, 64)
	go func() {
		defer close(out)
		next := max(from, 1)
		backoff := 100 * time.Millisecond
		for ctx.Err() == nil {
			err := c.watchOnce(ctx, group, &next, out)
			var ce *CompactedError
			if errors.As(err, &ce) {
				select {
				case out <- WatchEvent{Err: err}:
				case <-ctx.Done():
				}
				return
			}
			if err == nil {
				backoff = 100 * time.Millisecond
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 2*time.Second)
		}
	}()
	return out
}

func (c *Client) watchOnce(ctx context.Context, group string, next *uint64, out chan<- WatchEvent) error {
	c.mu.Lock()
	addr := c.leaderOf[group]
	if addr == "" {
		c.next = (c.next + 1) % len(c.endpoints)
		addr = c.endpoints[c.next]
	}
	c.mu.Unlock()
	u := "http://" + addr + "/v1/changes/" + url.PathEscape(group) + "?from=" + strconv.FormatUint(*next, 10)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		c.forget(group, addr)
		return err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusGone:
		var g GoneBody
		json.NewDecoder(resp.Body).Decode(&g)
		return &CompactedError{Oldest: g.Oldest}
	default:
		// 503: this replica is not current (restarting, or cut off from
		// its leader); the next attempt goes elsewhere.
		c.forget(group, addr)
		var e ErrorBody
		json.NewDecoder(resp.Body).Decode(&e)
		return fmt.Errorf("ldcd: watch %s at %s: status %d: %s", group, addr, resp.StatusCode, e.Error)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		var ev ChangeEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			return err
		}
		if !ev.Heartbeat {
			if ev.Index < *next {
				continue // already delivered before a reconnect
			}
			*next = ev.Index + 1
		}
		select {
		case out <- WatchEvent{ChangeEvent: ev}:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return sc.Err()
}
