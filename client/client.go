package client

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ldcd/ldcd/placement"
)

// Errors returned by the client. Use errors.Is.
var (
	// ErrNotFound is returned by Get when the key does not exist.
	ErrNotFound = errors.New("ldcd: key not found")
	// ErrCASFailed is returned (inside a *CASError) when a compare-and-swap
	// found another version.
	ErrCASFailed = errors.New("ldcd: compare failed")
	// ErrIndeterminate is returned when a write may or may not have been
	// applied (a timeout, lost leadership, a connection lost after sending).
	// The client never retries such a write.
	ErrIndeterminate = errors.New("ldcd: outcome unknown")
	// ErrUnavailable is returned when no node could serve the request
	// before the context ended or the retries ran out. Nothing was applied.
	ErrUnavailable = errors.New("ldcd: unavailable")
	// ErrNoSpace is returned for a write refused because a node holding a
	// replica of its group is below its free disk space reserve (HTTP 507,
	// the NOSPACE alarm). Nothing was applied; writes resume once space is
	// freed, and reads go on meanwhile.
	ErrNoSpace = errors.New("ldcd: no space")
)

// CASError reports a failed compare-and-swap and the key's current version
// (0: the key does not exist).
type CASError struct {
	Current uint64
}

func (e *CASError) Error() string {
	return fmt.Sprintf("ldcd: compare failed: the key's version is %d", e.Current)
}

// Is makes errors.Is(err, ErrCASFailed) true.
func (e *CASError) Is(target error) bool { return target == ErrCASFailed }

// APIError is any other error answer of the API.
type APIError struct {
	Status  int
	Message string
}

func (e *APIError) Error() string { return fmt.Sprintf("ldcd: %d: %s", e.Status, e.Message) }

// Is maps 503 to ErrUnavailable and 504 to ErrIndeterminate.
func (e *APIError) Is(target error) bool {
	return (target == ErrUnavailable && e.Status == http.StatusServiceUnavailable) ||
		(target == ErrIndeterminate && e.Status == http.StatusGatewayTimeout)
}

// Config configures a Client.
type Config struct {
	// Endpoints are HTTP addresses of any nodes ("127.0.0.1:7070" or
	// "http://127.0.0.1:7070"). The client learns the others.
	Endpoints []string
	// Timeout bounds each call when its context has no deadline. Default 10s.
	Timeout time.Duration
	// HTTPClient, if set, is used for every request that does not go over
	// frames.
	HTTPClient *http.Client
	// NoFrames sends every request as plain HTTP/1.1. By default key-value,
	// global and transaction requests go over a few multiplexed framed
	// connections per node (frames.go); nodes that do not serve frames get
	// plain HTTP.
	NoFrames bool
}

// Client talks to an ldcd cluster. It keeps a routing cache, so requests go
// straight to the leader of the user's group, refreshes it when a node
// answers for another leader, and retries what is safe to retry: reads, and
// writes that were definitely not applied. It is safe for concurrent use.
type Client struct {
	cfg    Config
	hc     *http.Client
	frames *framePool // nil with NoFrames

	mu        sync.Mutex // guards the fields below
	endpoints []string
	next      int
	shardOf   [placement.NumShards]string // shard → group
	leaderOf  map[string]string           // group → leader HTTP address
	epochOf   map[string]uint64           // group → routing epoch
	refreshed time.Time

	staleEpochRetries atomic.Uint64
}

// New returns a client for the cluster reachable at cfg.Endpoints.
func New(cfg Config) (*Client, error) {
	if len(cfg.Endpoints) == 0 {
		return nil, errors.New("ldcd: no endpoints")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	c := &Client{cfg: cfg, leaderOf: map[string]string{}, epochOf: map[string]uint64{}}
	for _, e := range cfg.Endpoints {
		e = strings.TrimSuffix(strings.TrimPrefix(strings.TrimPrefix(e, "http://"), "https://"), "/")
		if e == "" {
			continue
		}
		c.endpoints = append(c.endpoints, e)
	}
	if len(c.endpoints) == 0 {
		return nil, errors.New("ldcd: no endpoints")
	}
	c.hc = cfg.HTTPClient
	if c.hc == nil {
		c.hc = &http.Client{Transport: &http.Transport{
			DialContext:         (&net.Dialer{Timeout: 2 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConnsPerHost: 256,
			IdleConnTimeout:     90 * time.Second,
		}}
	}
	if !cfg.NoFrames {
		c.frames = newFramePool(2 * time.Second)
	}
	return c, nil
}

// Close releases idle connections and closes framed ones.
func (c *Client) Close() error {
	c.hc.CloseIdleConnections()
	if c.frames != nil {
		c.frames.close()
	}
	return nil
}

// request is one API call.
type request struct {
	method string
	path   string // escaped path
	query  url.Values
	body   []byte
	group  string // "" when unknown (routing by shard then)
	shard  int    // -1 when not a user request
	write  bool
	stale  bool
}

// endpoint picks the node to send r to: the cached leader of its group, or
// the next known endpoint; and the group's routing epoch as known (0: not
// known).
func (c *Client) endpoint(r *request) (addr, group string, epoch uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	group = r.group
	if group == "" && r.shard >= 0 {
		group = c.shardOf[r.shard]
	}
	epoch = c.epochOf[group]
	if l := c.leaderOf[group]; l != "" && group != "" && !r.stale {
		return l, group, epoch
	}
	c.next = (c.next + 1) % len(c.endpoints)
	return c.endpoints[c.next], group, epoch
}

// StaleEpochRetries counts writes refused for a stale routing epoch and
// retried after a refresh.
func (c *Client) StaleEpochRetries() uint64 { return c.staleEpochRetries.Load() }

func (c *Client) learn(group, leader string) {
	if group == "" || leader == "" {
		return
	}
	c.mu.Lock()
	c.leaderOf[group] = leader
	c.mu.Unlock()
}

func (c *Client) forget(group, addr string) {
	c.mu.Lock()
	if c.leaderOf[group] == addr {
		delete(c.leaderOf, group)
	}
	c.mu.Unlock()
}

// refresh reloads the routing table from /v1/cluster, at most every 250ms.
func (c *Client) refresh(ctx context.Context) {
	c.mu.Lock()
	if time.Since(c.refreshed) < 250*time.Millisecond {
		c.mu.Unlock()
		return
	}
	c.refreshed = time.Now()
	c.mu.Unlock()
	info, err := c.Cluster(ctx)
	if err != nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, g := range info.Groups {
		c.epochOf[g.ID] = g.Epoch
		if g.LeaderHTTP != "" {
			c.leaderOf[g.ID] = g.LeaderHTTP
		} else {
			delete(c.leaderOf, g.ID)
		}
		if lo, hi, err := placement.ParseRange(g.Shards); err == nil && g.Shards != "" {
			for s := lo; s <= hi; s++ {
				c.shardOf[s] = g.ID
			}
		}
	}
	known := map[string]bool{}
	for _, e := range c.endpoints {
		known[e] = true
	}
	for _, n := range info.Nodes {
		if n.HTTPAddr != "" && !known[n.HTTPAddr] && n.Status == "alive" {
			c.endpoints = append(c.endpoints, n.HTTPAddr)
		}
	}
}

// response is a raw answer.
type response struct {
	status int
	header http.Header
	body   []byte
}

// do sends r, retrying definite failures until ctx ends.
func (c *Client) do(ctx context.Context, r *request) (*response, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.cfg.Timeout)
		defer cancel()
	}
	c.mu.Lock()
	unrouted := r.shard >= 0 && c.shardOf[r.shard] == "" && c.refreshed.IsZero()
	c.mu.Unlock()
	if unrouted {
		c.refresh(ctx)
	}
	backoff := 20 * time.Millisecond
	var lastErr error
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				if r.write && errors.Is(lastErr, ErrIndeterminate) {
					return nil, lastErr
				}
				return nil, fmt.Errorf("%w: %w (last error: %v)", ErrUnavailable, ctx.Err(), lastErr)
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 500*time.Millisecond)
			c.refresh(ctx)
		}
		addr, group, epoch := c.endpoint(r)
		resp, err := c.send(ctx, addr, r, epoch)
		if err != nil {
			var op *net.OpError
			dial := errors.As(err, &op) && op.Op == "dial"
			c.forget(group, addr)
			if r.write && !dial {
				return nil, fmt.Errorf("%w: %w", ErrIndeterminate, err)
			}
			lastErr = err
			if ctx.Err() != nil {
				return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
			}
			continue
		}
		if l := resp.header.Get(HeaderLeaderHTTP); l != "" {
			c.learn(resp.header.Get(HeaderGroup), l)
		}
		if resp.status == http.StatusServiceUnavailable {
			c.forget(group, addr)
			lastErr = apiError(resp)
			continue
		}
		if resp.status == http.StatusConflict {
			// Routed by a stale epoch, or the shard moved in a split:
			// nothing was read or applied. Refresh now and retry.
			c.staleEpochRetries.Add(1)
			c.mu.Lock()
			c.refreshed = time.Time{}
			c.mu.Unlock()
			lastErr = apiError(resp)
			continue
		}
		return resp, nil
	}
}

func (c *Client) send(ctx context.Context, addr string, r *request, epoch uint64) (*response, error) {
	target := r.path
	if len(r.query) > 0 {
		target += "?" + r.query.Encode()
	}
	if c.frames != nil && FramedPath(r.path) {
		fc, err := c.frames.conn(ctx, addr)
		if err == nil {
			h := http.Header{}
			if r.body != nil {
				h.Set("Content-Type", "application/octet-stream")
			}
			if r.write && epoch > 0 {
				h.Set(HeaderEpoch, strconv.FormatUint(epoch, 10))
			}
			if d, ok := ctx.Deadline(); ok {
				h.Set(HeaderFrameTimeout, time.Until(d).String())
			}
			return fc.do(ctx, r.method, target, h, r.body)
		}
		if !errors.Is(err, errNoFrames) {
			return nil, err
		}
	}
	u := "http://" + addr + target
	var body io.Reader
	if r.body != nil {
		body = bytes.NewReader(r.body)
	}
	req, err := http.NewRequestWithContext(ctx, r.method, u, body)
	if err != nil {
		return nil, err
	}
	if r.body != nil {
		req.Header.Set("Content-Type", "application/octet-stream")
	}
	if r.write && epoch > 0 {
		req.Header.Set(HeaderEpoch, strconv.FormatUint(epoch, 10))
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	return &response{status: resp.StatusCode, header: resp.Header, body: b}, nil
}

func apiError(resp *response) error {
	var eb ErrorBody
	msg := strings.TrimSpace(string(resp.body))
	if json.Unmarshal(resp.body, &eb) == nil && eb.Error != "" {
		msg = eb.Error
	}
	switch resp.status {
	case http.StatusNotFound:
		if msg == "key not found" {
			return ErrNotFound
		}
	case http.StatusPreconditionFailed:
		var cur uint64
		if eb.Version != nil {
			cur = *eb.Version
		}
		return &CASError{Current: cur}
	case http.StatusGatewayTimeout:
		return fmt.Errorf("%w: %s", ErrIndeterminate, msg)
	case http.StatusInsufficientStorage:
		return fmt.Errorf("%w: %s", ErrNoSpace, msg)
	}
	return &APIError{Status: resp.status, Message: msg}
}

func decode(resp *response, out any) error {
	if resp.status != http.StatusOK {
		return apiError(resp)
	}
	if err := json.Unmarshal(resp.body, out); err != nil {
		return fmt.Errorf("ldcd: decoding answer: %w", err)
	}
	return nil
}

// Value is a key's value with its version.
type Value struct {
	Data    []byte
	Version uint64
	// AppliedIndex is the serving replica's applied index, on stale reads.
	AppliedIndex uint64
	// LagMs is how far behind a CZone copy that served the read may be.
	LagMs int64
}

// ReadOption changes how a read is served.
type ReadOption func(*request)

// Stale lets any replica serve the read from its local state, which may lag.
func Stale() ReadOption {
	return func(r *request) { r.stale = true; r.query.Set("consistency", "stale") }
}

// MaxStaleness lets a CZone node serve a global read locally only while its
// copy lags by at most d; otherwise the global leader serves it.
func MaxStaleness(d time.Duration) ReadOption {
	return func(r *request) { r.stale = true; r.query.Set("max_staleness", d.String()) }
}

// MinIndex makes a global read return a value at least as new as index
// (read-your-writes across cities: the version a write returned); a CZone
// node waits briefly for its copy, then defers to the global leader.
func MinIndex(index uint64) ReadOption {
	return func(r *request) { r.stale = true; r.query.Set("min_index", strconv.FormatUint(index, 10)) }
}

func userPath(uid uint64, key string) string {
	return "/v1/kv/" + strconv.FormatUint(uid, 10) + "/" + url.PathEscape(key)
}

func userReq(method string, uid uint64, key string) *request {
	return &request{method: method, path: userPath(uid, key), query: url.Values{}, shard: placement.Shard(uid)}
}

func globalReq(method, key string) *request {
	return &request{method: method, path: "/v1/global/" + url.PathEscape(key), query: url.Values{}, group: placement.GlobalGroup, shard: -1}
}

func (c *Client) put(ctx context.Context, r *request, value []byte, cas *uint64) (uint64, error) {
	r.body, r.write = value, true
	if r.body == nil {
		r.body = []byte{}
	}
	if cas != nil {
		r.query.Set("cas", strconv.FormatUint(*cas, 10))
	}
	resp, err := c.do(ctx, r)
	if err != nil {
		return 0, err
	}
	var wr WriteResult
	if err := decode(resp, &wr); err != nil {
		return 0, err
	}
	return wr.Version, nil
}

func (c *Client) get(ctx context.Context, r *request, opts []ReadOption) (*Value, error) {
	for _, o := range opts {
		o(r)
	}
	resp, err := c.do(ctx, r)
	if err != nil {
		return nil, err
	}
	if resp.status != http.StatusOK {
		return nil, apiError(resp)
	}
	v := &Value{Data: resp.body}
	v.Version, _ = strconv.ParseUint(resp.header.Get(HeaderVersion), 10, 64)
	v.AppliedIndex, _ = strconv.ParseUint(resp.header.Get(HeaderAppliedIndex), 10, 64)
	v.LagMs, _ = strconv.ParseInt(resp.header.Get(HeaderLagMs), 10, 64)
	return v, nil
}

func (c *Client) del(ctx context.Context, r *request, cas *uint64) (bool, error) {
	r.write = true
	if cas != nil {
		r.query.Set("cas", strconv.FormatUint(*cas, 10))
	}
	resp, err := c.do(ctx, r)
	if err != nil {
		return false, err
	}
	var wr WriteResult
	if err := decode(resp, &wr); err != nil {
		return false, err
	}
	return wr.Deleted != nil && *wr.Deleted, nil
}

func (c *Client) list(ctx context.Context, r *request, prefix string, limit int, opts []ReadOption) (*ListResult, error) {
	if prefix != "" {
		r.query.Set("prefix", prefix)
	}
	if limit > 0 {
		r.query.Set("limit", strconv.Itoa(limit))
	}
	for _, o := range opts {
		o(r)
	}
	resp, err := c.do(ctx, r)
	if err != nil {
		return nil, err
	}
	var lr ListResult
	if err := decode(resp, &lr); err != nil {
		return nil, err
	}
	return &lr, nil
}

// Put writes value under key of user uid and returns the key's new version.
func (c *Client) Put(ctx context.Context, uid uint64, key string, value []byte) (uint64, error) {
	return c.put(ctx, userReq(http.MethodPut, uid, key), value, nil)
}

// CompareAndSwap writes value only if the key's version is expected (0: the
// key must not exist). On a mismatch it returns a *CASError.
func (c *Client) CompareAndSwap(ctx context.Context, uid uint64, key string, value []byte, expected uint64) (uint64, error) {
	return c.put(ctx, userReq(http.MethodPut, uid, key), value, &expected)
}

// Get reads key of user uid; linearizable unless Stale is given.
func (c *Client) Get(ctx context.Context, uid uint64, key string, opts ...ReadOption) (*Value, error) {
	return c.get(ctx, userReq(http.MethodGet, uid, key), opts)
}

// Delete removes key of user uid and reports whether it existed.
func (c *Client) Delete(ctx context.Context, uid uint64, key string) (bool, error) {
	return c.del(ctx, userReq(http.MethodDelete, uid, key), nil)
}

// CompareAndDelete removes the key only if its version is expected.
func (c *Client) CompareAndDelete(ctx context.Context, uid uint64, key string, expected uint64) (bool, error) {
	return c.del(ctx, userReq(http.MethodDelete, uid, key), &expected)
}

// List returns up to limit keys of user uid that start with prefix (limit 0:
// the server's default).
func (c *Client) List(ctx context.Context, uid uint64, prefix string, limit int, opts ...ReadOption) (*ListResult, error) {
	r := userReq(http.MethodGet, uid, "")
	return c.list(ctx, r, prefix, limit, opts)
}

// ListAfter lists like List, starting after the key after (paging).
func (c *Client) ListAfter(ctx context.Context, uid uint64, prefix, after string, limit int, opts ...ReadOption) (*ListResult, error) {
	r := userReq(http.MethodGet, uid, "")
	if after != "" {
		r.query.Set("after", after)
	}
	return c.list(ctx, r, prefix, limit, opts)
}

// Txn runs a transaction over keys of user uid atomically.
func (c *Client) Txn(ctx context.Context, uid uint64, txn TxnRequest) (*TxnResult, error) {
	b, err := json.Marshal(txn)
	if err != nil {
		return nil, err
	}
	r := &request{method: http.MethodPost, path: "/v1/txn/" + strconv.FormatUint(uid, 10), query: url.Values{}, shard: placement.Shard(uid), body: b, write: true}
	resp, err := c.do(ctx, r)
	if err != nil {
		return nil, err
	}
	var tr TxnResult
	if err := decode(resp, &tr); err != nil {
		return nil, err
	}
	return &tr, nil
}

// GlobalPut writes a global key.
func (c *Client) GlobalPut(ctx context.Context, key string, value []byte) (uint64, error) {
	return c.put(ctx, globalReq(http.MethodPut, key), value, nil)
}

// GlobalCompareAndSwap writes a global key if its version is expected.
func (c *Client) GlobalCompareAndSwap(ctx context.Context, key string, value []byte, expected uint64) (uint64, error) {
	return c.put(ctx, globalReq(http.MethodPut, key), value, &expected)
}

// GlobalGet reads a global key.
func (c *Client) GlobalGet(ctx context.Context, key string, opts ...ReadOption) (*Value, error) {
	return c.get(ctx, globalReq(http.MethodGet, key), opts)
}

// GlobalDelete removes a global key and reports whether it existed.
func (c *Client) GlobalDelete(ctx context.Context, key string) (bool, error) {
	return c.del(ctx, globalReq(http.MethodDelete, key), nil)
}

// GlobalList lists global keys starting with prefix.
func (c *Client) GlobalList(ctx context.Context, prefix string, limit int, opts ...ReadOption) (*ListResult, error) {
	return c.list(ctx, globalReq(http.MethodGet, ""), prefix, limit, opts)
}

// Cluster returns the cluster's nodes and groups.
func (c *Client) Cluster(ctx context.Context) (*ClusterInfo, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.cfg.Timeout)
		defer cancel()
	}
	c.mu.Lock()
	eps := append([]string(nil), c.endpoints...)
	c.mu.Unlock()
	var lastErr error
	for _, e := range eps {
		resp, err := c.send(ctx, e, &request{method: http.MethodGet, path: "/v1/cluster"}, 0)
		if err != nil {
			lastErr = err
			continue
		}
		var info ClusterInfo
		if err := decode(resp, &info); err != nil {
			lastErr = err
			continue
		}
		return &info, nil
	}
	return nil, fmt.Errorf("%w: %w", ErrUnavailable, lastErr)
}

// DecodeValue returns the bytes of a KV or OpResult value.
func DecodeValue(value, valueBase64 string) ([]byte, error) {
	if valueBase64 != "" {
		return base64.StdEncoding.DecodeString(valueBase64)
	}
	return []byte(value), nil
}

// Placement returns the desired placement: topology, groups, drained nodes.
func (c *Client) Placement(ctx context.Context) (*placement.Placement, error) {
	resp, err := c.do(ctx, &request{method: http.MethodGet, path: "/v1/placement", shard: -1})
	if err != nil {
		return nil, err
	}
	if resp.status != http.StatusOK {
		return nil, apiError(resp)
	}
	return placement.Decode(resp.body)
}

// PlacementAction runs an operator action ("move", "drain", "undrain",
// "failback", "split"); with req.DryRun it only returns the plan.
func (c *Client) PlacementAction(ctx context.Context, action string, req PlacementRequest) (*PlacementResult, error) {
	b, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	r := &request{method: http.MethodPost, path: "/v1/placement/" + url.PathEscape(action), shard: -1, body: b, write: !req.DryRun}
	resp, err := c.do(ctx, r)
	if err != nil {
		return nil, err
	}
	var res PlacementResult
	if err := decode(resp, &res); err != nil {
		return nil, err
	}
	return &res, nil
}

// Recover asks a node to rebuild a group that lost a quorum of its voters
// for good (ldcd recover). With req.DryRun it only reports the survivors and
// what may be lost.
func (c *Client) Recover(ctx context.Context, req RecoverRequest) (*RecoverResult, error) {
	b, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	resp, err := c.do(ctx, &request{method: http.MethodPost, path: "/v1/placement/recover", shard: -1, body: b, write: !req.DryRun})
	if err != nil {
		return nil, err
	}
	var res RecoverResult
	if err := decode(resp, &res); err != nil {
		return nil, err
	}
	return &res, nil
}
