package server

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/pprof"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/ldcd/ldcd/client"
	"github.com/ldcd/ldcd/placement"
	"github.com/ldcd/ldcd/raftgroup"
	"github.com/ldcd/ldcd/store"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// List limits.
const (
	defaultListLimit = 1000
	maxListLimit     = 10000
)

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", s.handleHealth)
	mux.Handle("/metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/v1/kv/{uid}/{key...}", s.handleKV)
	mux.HandleFunc("/v1/txn/{uid}", s.handleTxn)
	mux.HandleFunc("/v1/global/{key...}", s.handleGlobal)
	mux.HandleFunc(client.FramesPath, s.handleFrames)
	mux.HandleFunc("/v1/cluster", s.handleCluster)
	mux.HandleFunc("/v1/routing", s.handleRouting)
	mux.HandleFunc("/v1/changes/{group}", s.handleChanges)
	mux.HandleFunc("/v1/changes/{group}/{rest}", s.handleChanges)
	mux.HandleFunc("/v1/placement", s.handlePlacementShow)
	mux.HandleFunc("/v1/placement/{op}", s.handlePlacementOp)
	mux.HandleFunc("POST /v1/placement/recover", s.handleRecover)
	mux.HandleFunc("/v1/internal/status", s.handleStatus)
	mux.HandleFunc("GET /v1/internal/members/{group}", s.handleMembers)
	mux.HandleFunc("POST /v1/internal/recover/{group}", s.handleInternalRecover)
	mux.HandleFunc("/v1/internal/placement/at", s.handlePlacementAt)
	mux.HandleFunc("POST /v1/internal/split/fence", s.handleSplitFence)
	mux.HandleFunc("POST /v1/internal/split/purge", s.handleSplitPurge)
	mux.HandleFunc("POST /v1/internal/split/ingest", s.handleSplitIngest)
	mux.HandleFunc("GET /v1/internal/split/export", s.handleSplitExport)
	mux.HandleFunc("/v1/internal/digest", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"node": s.cfg.Name, "groups": s.digests()})
	})
	if s.cfg.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no route for %s %s", r.Method, r.URL.Path))
	})
	s.handler = s.instrument(mux)
	return s.handler
}

// instrument counts requests and turns a panic in a handler into a 500, so a
// bad request can never take the node down.
func (s *Server) instrument(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
		r, done := s.limitRequest(sw, r)
		defer done()
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				s.logger.Error("handler panic", "method", r.Method, "path", r.URL.Path, "panic", v)
				if !sw.wrote {
					writeError(sw, http.StatusInternalServerError, "internal error")
				}
			}
			route := r.Pattern
			if route == "" {
				route = "unmatched"
			}
			s.metrics.requests.WithLabelValues(route, strconv.Itoa(sw.code)).Inc()
		}()
		next.ServeHTTP(sw, r)
	})
}

type statusWriter struct {
	http.ResponseWriter
	code  int
	wrote bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wrote {
		w.code, w.wrote = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	w.wrote = true
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection (frames
// hijack it).
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, client.ErrorBody{Error: msg})
}

// handleHealth answers 200 once the node can serve: it knows the
// placement, hosts every replica the placement gives it, and each of its
// groups knows a leader; 503 with the reason until then (right after a
// start, or while a group elects).
func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	p, _ := s.currentPlacement()
	var v uint64
	if p != nil {
		v = p.Version
	}
	body := map[string]any{"status": "ok", "node": s.cfg.Name, "placement_version": v, "groups": len(s.host.Groups())}
	if reason := s.notReady(p); reason != "" {
		body["status"], body["error"] = "starting", reason
		w.Header().Set("Retry-After", "1")
		writeJSON(w, http.StatusServiceUnavailable, body)
		return
	}
	writeJSON(w, http.StatusOK, body)
}

// notReady says why the node cannot serve yet, or "" when it can.
func (s *Server) notReady(p *placement.Placement) string {
	if p == nil {
		return "no placement yet"
	}
	for _, g := range p.Groups {
		if _, mine := g.Replica(s.cfg.Name); !mine {
			continue
		}
		lg, ok := s.host.Group(g.ID)
		if !ok {
			return "replica of " + g.ID + " not started yet"
		}
		if id, _ := lg.Leader(); id == "" {
			return "group " + g.ID + " has no leader yet"
		}
	}
	return ""
}

// requestContext bounds r by the node's request timeout, or by a shorter
// ?timeout= the client asked for.
func (s *Server) requestContext(r *http.Request) (context.Context, context.CancelFunc, error) {
	d := s.cfg.RequestTimeout
	if t := queryValue(r, "timeout"); t != "" {
		v, err := time.ParseDuration(t)
		if err != nil || v <= 0 {
			return nil, nil, fmt.Errorf("timeout %q: want a positive duration such as 500ms", t)
		}
		d = min(d, v)
	}
	if dl, ok := r.Context().Deadline(); ok && time.Until(dl) <= d {
		// The request's own deadline comes first (a framed request
		// carries one): no second context and timer.
		return r.Context(), func() {}, nil
	}
	ctx, cancel := context.WithTimeout(r.Context(), d)
	return ctx, cancel, nil
}

// queryValue returns the first value of key in r's query, as
// r.URL.Query().Get(key) does, without building the whole map: a read looks
// up three parameters, and three parsed maps were 4% of a node's CPU under
// 64 clients' stale gets.
func queryValue(r *http.Request, key string) string {
	q := r.URL.RawQuery
	for q != "" {
		var kv string
		kv, q, _ = strings.Cut(q, "&")
		if kv == "" || strings.Contains(kv, ";") {
			continue // url.ParseQuery skips these pairs
		}
		k, v, _ := strings.Cut(kv, "=")
		k, err := url.QueryUnescape(k)
		if err != nil || k != key {
			continue
		}
		if v, err = url.QueryUnescape(v); err == nil {
			return v
		}
	}
	return ""
}

// readBody reads at most limit bytes of r's body, answering 413 if there is
// more.
//
// The body counts against the node's in-flight bound (limits.go): a
// declared length is taken whole before reading, so that many requests
// cannot each hold a part of the bound and all starve; a body of unknown
// length is counted as it arrives. Over the bound, after a short wait,
// the answer is 503. Once the body is read, its read deadline is lifted,
// so that the handler may run for as long as the request's timeout
// allows.
func readBody(w http.ResponseWriter, r *http.Request, limit int) ([]byte, bool) {
	if r.ContentLength > int64(limit) {
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body is larger than the limit of %d bytes", limit))
		return nil, false
	}
	var body io.Reader = http.MaxBytesReader(w, r.Body, int64(limit))
	if rb, ok := r.Context().Value(requestBytesKey{}).(*requestBytes); ok && !rb.prepaid {
		if r.ContentLength >= 0 {
			if err := rb.take(r.ContentLength); err != nil {
				w.Header().Set("Retry-After", "1")
				writeError(w, http.StatusServiceUnavailable, err.Error())
				return nil, false
			}
		} else {
			body = &countedReader{r: body, b: rb}
		}
	}
	b, err := io.ReadAll(body)
	if err == nil {
		http.NewResponseController(w).SetReadDeadline(time.Time{})
	}
	if err != nil {
		var mb *http.MaxBytesError
		if errors.As(err, &mb) {
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body is larger than the limit of %d bytes", limit))
		} else if errors.Is(err, errBusy) {
			w.Header().Set("Retry-After", "1")
			writeError(w, http.StatusServiceUnavailable, err.Error())
		} else {
			writeError(w, http.StatusBadRequest, "reading body: "+err.Error())
		}
		return nil, false
	}
	return b, true
}

func parseVersion(s string) (uint64, error) {
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("version %q: want a non-negative integer", s)
	}
	return v, nil
}

// keyspace maps a request's keys into one group's stored keys: a user's
// (uid) or the global data.
type keyspace struct {
	group  string
	uid    uint64
	global bool
}

// shard returns the keyspace's shard, or -1 for global data.
func (k keyspace) shard() int {
	if k.global {
		return -1
	}
	return placement.Shard(k.uid)
}

func (k keyspace) key(user []byte) []byte {
	if k.global {
		return store.GlobalKey(user)
	}
	return store.UserKey(k.uid, user)
}

func (s *Server) userKeyspace(w http.ResponseWriter, r *http.Request) (keyspace, bool) {
	uid, err := placement.ParseUID(r.PathValue("uid"))
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return keyspace{}, false
	}
	p, _ := s.currentPlacement()
	if p == nil {
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, "the cluster has no placement yet (starting or not joined)")
		return keyspace{}, false
	}
	rg, ok := p.Topology.RangeOf(placement.Shard(uid))
	if !ok {
		writeError(w, http.StatusInternalServerError, "no range holds this shard")
		return keyspace{}, false
	}
	return keyspace{group: rg.GroupID(), uid: uid}, true
}

// movedError answers a request for a shard its group has handed to another
// (a split switched the routing): nothing was read or applied; refresh the
// routing and retry.
func movedError(w http.ResponseWriter, gid string, shard int) {
	writeJSON(w, http.StatusConflict, client.ErrorBody{
		Error: fmt.Sprintf("shard %02d has moved out of group %s (a split); refresh the routing table and retry (nothing was applied)", shard, gid),
	})
}

func (s *Server) handleKV(w http.ResponseWriter, r *http.Request) {
	ks, ok := s.userKeyspace(w, r)
	if !ok {
		return
	}
	s.handleKeys(w, r, ks)
}

func (s *Server) handleGlobal(w http.ResponseWriter, r *http.Request) {
	s.handleKeys(w, r, keyspace{group: placement.GlobalGroup, global: true})
}

// handleKeys serves GET, PUT and DELETE of one key, and GET of a list when
// the key is empty.
func (s *Server) handleKeys(w http.ResponseWriter, r *http.Request, ks keyspace) {
	key := []byte(r.PathValue("key"))
	if r.Method == http.MethodGet && len(key) == 0 {
		s.list(w, r, ks)
		return
	}
	if err := store.CheckKey(key); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	var cas *uint64
	if c := queryValue(r, "cas"); c != "" {
		v, err := parseVersion(c)
		if err != nil {
			writeError(w, http.StatusBadRequest, "cas: "+err.Error())
			return
		}
		cas = &v
	}
	sk := ks.key(key)
	switch r.Method {
	case http.MethodGet:
		s.read(w, r, ks, func(w http.ResponseWriter, st *store.Store) {
			kv, found, applied, err := st.GetAt(sk)
			reportApplied(w, applied)
			if err != nil {
				writeError(w, http.StatusServiceUnavailable, err.Error())
				return
			}
			if !found {
				writeError(w, http.StatusNotFound, "key not found")
				return
			}
			w.Header().Set(client.HeaderVersion, strconv.FormatUint(kv.Version, 10))
			w.Header().Set("Content-Type", "application/octet-stream")
			w.WriteHeader(http.StatusOK)
			w.Write(kv.Value)
		})
	case http.MethodPut:
		body, ok := readBody(w, r, s.cfg.MaxValueSize)
		if !ok {
			return
		}
		cmd := casCommand(store.Op{Type: store.OpPut, Key: sk, Value: body}, cas)
		s.write(w, r, body, ks.group, cmd, func(w http.ResponseWriter, res *store.Result) {
			if !res.Succeeded {
				casFailed(w, *cas, res.Ops[0].Version)
				return
			}
			writeJSON(w, http.StatusOK, client.WriteResult{Version: res.Index})
		})
	case http.MethodDelete:
		cmd := casCommand(store.Op{Type: store.OpDelete, Key: sk}, cas)
		s.write(w, r, nil, ks.group, cmd, func(w http.ResponseWriter, res *store.Result) {
			if !res.Succeeded {
				casFailed(w, *cas, res.Ops[0].Version)
				return
			}
			found := res.Ops[0].Found
			writeJSON(w, http.StatusOK, client.WriteResult{Version: res.Index, Deleted: &found, PrevVersion: res.Ops[0].Version})
		})
	default:
		w.Header().Set("Allow", "GET, PUT, DELETE")
		writeError(w, http.StatusMethodNotAllowed, r.Method+" is not allowed here; use GET, PUT or DELETE")
	}
}

// reportApplied sets the applied-index header of a local (stale or CZone)
// read to the index the data was read at: the caller announced such a read
// by setting the header; the read itself must report the index of the same
// transaction, not one read before it.
func reportApplied(w http.ResponseWriter, applied uint64) {
	if w.Header().Get(client.HeaderAppliedIndex) != "" {
		w.Header().Set(client.HeaderAppliedIndex, strconv.FormatUint(applied, 10))
	}
}

// casCommand wraps op in a command; with cas set, op runs only if its key's
// version is *cas, and otherwise the key is read (for the 412 answer).
func casCommand(op store.Op, cas *uint64) *store.Command {
	cmd := &store.Command{Then: []store.Op{op}}
	if cas != nil {
		cmd.Compares = []store.Compare{{Key: op.Key, Target: store.TargetVersion, Op: store.CmpEqual, Version: *cas}}
		cmd.Else = []store.Op{{Type: store.OpGet, Key: op.Key}}
	}
	return cmd
}

func casFailed(w http.ResponseWriter, want, have uint64) {
	writeJSON(w, http.StatusPreconditionFailed, client.ErrorBody{
		Error:   fmt.Sprintf("compare failed: the key's version is %d, not %d", have, want),
		Version: &have,
	})
}

func encodeValue(v []byte) (str, b64 string) {
	if utf8.Valid(v) {
		return string(v), ""
	}
	return "", base64.StdEncoding.EncodeToString(v)
}

func (s *Server) list(w http.ResponseWriter, r *http.Request, ks keyspace) {
	q := r.URL.Query()
	limit := defaultListLimit
	if l := q.Get("limit"); l != "" {
		v, err := strconv.Atoi(l)
		if err != nil || v < 1 || v > maxListLimit {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("limit %q: want 1 to %d", l, maxListLimit))
			return
		}
		limit = v
	}
	prefix := ks.key([]byte(q.Get("prefix")))
	var after []byte
	if a := q.Get("after"); a != "" {
		after = ks.key([]byte(a))
	}
	s.read(w, r, ks, func(w http.ResponseWriter, st *store.Store) {
		kvs, more, applied, err := st.RangeAt(prefix, after, limit)
		reportApplied(w, applied)
		if err != nil {
			writeError(w, http.StatusServiceUnavailable, err.Error())
			return
		}
		out := client.ListResult{KVs: make([]client.KV, 0, len(kvs)), More: more}
		for _, kv := range kvs {
			v, b := encodeValue(kv.Value)
			out.KVs = append(out.KVs, client.KV{Key: string(store.UserPart(kv.Key)), Value: v, ValueBase64: b, Version: kv.Version})
		}
		writeJSON(w, http.StatusOK, out)
	})
}

func (s *Server) handleTxn(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		writeError(w, http.StatusMethodNotAllowed, r.Method+" is not allowed here; use POST")
		return
	}
	ks, ok := s.userKeyspace(w, r)
	if !ok {
		return
	}
	body, ok := readBody(w, r, 2*s.cfg.MaxValueSize+64<<10)
	if !ok {
		return
	}
	req, cmd, err := decodeTxn(body, ks, s.cfg.MaxValueSize)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	s.write(w, r, body, ks.group, cmd, func(w http.ResponseWriter, res *store.Result) {
		ops := req.Then
		if !res.Succeeded {
			ops = req.Else
		}
		out := client.TxnResult{Succeeded: res.Succeeded, Version: res.Index, Results: make([]client.OpResult, len(ops))}
		for i, op := range ops {
			or := res.Ops[i]
			v, b := encodeValue(or.Value)
			out.Results[i] = client.OpResult{Op: op.Op, Key: op.Key, Found: or.Found, Version: or.Version, Value: v, ValueBase64: b}
		}
		writeJSON(w, http.StatusOK, out)
	})
}

// decodeTxn parses and checks a transaction body and builds its command.
func decodeTxn(body []byte, ks keyspace, maxValue int) (*client.TxnRequest, *store.Command, error) {
	var req client.TxnRequest
	dec := json.NewDecoder(bytesReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return nil, nil, fmt.Errorf("txn body: %w", err)
	}
	if dec.More() {
		return nil, nil, errors.New("txn body: trailing data after the JSON object")
	}
	if len(req.Then)+len(req.Else) == 0 {
		return nil, nil, errors.New("txn: no operations in then or else")
	}
	value := func(where, s, b64 string) ([]byte, error) {
		if s != "" && b64 != "" {
			return nil, fmt.Errorf("txn: %s has both value and value_base64", where)
		}
		v := []byte(s)
		if b64 != "" {
			var err error
			if v, err = base64.StdEncoding.DecodeString(b64); err != nil {
				return nil, fmt.Errorf("txn: %s: value_base64: %w", where, err)
			}
		}
		if len(v) > maxValue {
			return nil, fmt.Errorf("txn: %s: value is %d bytes, the limit is %d", where, len(v), maxValue)
		}
		return v, nil
	}
	cmd := &store.Command{}
	for i, c := range req.Compare {
		where := fmt.Sprintf("compare[%d]", i)
		if err := store.CheckKey([]byte(c.Key)); err != nil {
			return nil, nil, fmt.Errorf("txn: %s: %w", where, err)
		}
		v, err := value(where, c.Value, c.ValueBase64)
		if err != nil {
			return nil, nil, err
		}
		sc := store.Compare{Key: ks.key([]byte(c.Key)), Version: c.Version, Value: v}
		switch c.Target {
		case "":
			sc.Target = store.TargetVersion
			if c.Value != "" || c.ValueBase64 != "" {
				sc.Target = store.TargetValue
			}
		case "version":
			sc.Target = store.TargetVersion
		case "value":
			sc.Target = store.TargetValue
		default:
			return nil, nil, fmt.Errorf("txn: %s: target %q: want version or value", where, c.Target)
		}
		switch c.Op {
		case "", "=", "==":
			sc.Op = store.CmpEqual
		case "!=":
			sc.Op = store.CmpNotEqual
		case "<":
			sc.Op = store.CmpLess
		case ">":
			sc.Op = store.CmpGreater
		default:
			return nil, nil, fmt.Errorf("txn: %s: op %q: want =, !=, < or >", where, c.Op)
		}
		cmd.Compares = append(cmd.Compares, sc)
	}
	for _, branch := range []struct {
		name string
		ops  []client.Op
		out  *[]store.Op
	}{{"then", req.Then, &cmd.Then}, {"else", req.Else, &cmd.Else}} {
		for i, op := range branch.ops {
			where := fmt.Sprintf("%s[%d]", branch.name, i)
			if err := store.CheckKey([]byte(op.Key)); err != nil {
				return nil, nil, fmt.Errorf("txn: %s: %w", where, err)
			}
			so := store.Op{Key: ks.key([]byte(op.Key))}
			switch op.Op {
			case "put":
				so.Type = store.OpPut
				v, err := value(where, op.Value, op.ValueBase64)
				if err != nil {
					return nil, nil, err
				}
				so.Value = v
			case "delete":
				so.Type = store.OpDelete
			case "get":
				so.Type = store.OpGet
			default:
				return nil, nil, fmt.Errorf("txn: %s: op %q: want put, delete or get", where, op.Op)
			}
			if so.Type != store.OpPut && (op.Value != "" || op.ValueBase64 != "") {
				return nil, nil, fmt.Errorf("txn: %s: a %s takes no value", where, op.Op)
			}
			*branch.out = append(*branch.out, so)
		}
	}
	if err := cmd.Validate(); err != nil {
		return nil, nil, fmt.Errorf("txn: %w", err)
	}
	return &req, cmd, nil
}

// write applies cmd to group gid: here if this node leads it, otherwise at
// the leader. respond writes the answer of an applied command.
func (s *Server) write(w http.ResponseWriter, r *http.Request, body []byte, gid string, cmd *store.Command, respond func(http.ResponseWriter, *store.Result)) {
	ctx, cancel, err := s.requestContext(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	defer cancel()
	if e := r.Header.Get(client.HeaderEpoch); e != "" {
		epoch, err := strconv.ParseUint(e, 10, 64)
		if err != nil {
			writeError(w, http.StatusBadRequest, client.HeaderEpoch+": want a number")
			return
		}
		if p, _ := s.currentPlacement(); p != nil {
			if gp, ok := p.Group(gid); ok && epoch < gp.Epoch {
				writeJSON(w, http.StatusConflict, client.ErrorBody{
					Error: fmt.Sprintf("stale routing epoch: routed by epoch %d, range %s is at epoch %d; refresh the routing table and retry (nothing was applied)", epoch, gid, gp.Epoch),
					Epoch: gp.Epoch,
				})
				return
			}
		}
	}
	if g, ok := s.host.Group(gid); ok && g.IsLeader() {
		if s.refuseNoSpace(w, gid) {
			return
		}
		start := time.Now()
		res, err := g.Apply(ctx, cmd)
		switch {
		case err == nil:
			s.metrics.applySeconds.WithLabelValues(gid).Observe(time.Since(start).Seconds())
			s.servedHere(w, gid)
			respond(w, res)
			return
		case errors.Is(err, raftgroup.ErrIndeterminate):
			writeJSON(w, http.StatusGatewayTimeout, client.ErrorBody{Error: "the write's outcome is unknown (it may or may not have been applied): " + err.Error(), Indeterminate: true})
			return
		case errors.Is(err, store.ErrBadCommand):
			writeError(w, http.StatusBadRequest, err.Error())
			return
		case errors.Is(err, store.ErrMoved):
			var me *store.MovedError
			errors.As(err, &me)
			movedError(w, gid, me.Shard)
			return
		case errors.Is(err, context.DeadlineExceeded):
			w.Header().Set("Retry-After", "1")
			writeError(w, http.StatusServiceUnavailable, "timed out before the write was proposed (it was not applied): "+err.Error())
			return
		case !errors.Is(err, raftgroup.ErrNotLeader):
			writeError(w, http.StatusInternalServerError, err.Error())
			return
		}
		// Leadership moved before the write was proposed: forward it.
	}
	s.forward(ctx, w, r, body, gid, true)
}

// read serves a read of group gid: linearizable at the leader by default, or
// from the local replica with ?consistency=stale.
func (s *Server) read(w http.ResponseWriter, r *http.Request, ks keyspace, serve func(http.ResponseWriter, *store.Store)) {
	gid := ks.group
	ctx, cancel, err := s.requestContext(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	defer cancel()
	stale := false
	switch c := queryValue(r, "consistency"); c {
	case "", "linearizable":
	case "stale":
		stale = true
	default:
		writeError(w, http.StatusBadRequest, fmt.Sprintf("consistency %q: want linearizable or stale", c))
		return
	}
	if ks.global {
		if _, local := s.host.Group(gid); !local && s.serveCZoneRead(w, r, serve) {
			return
		}
	}
	if g, ok := s.host.Group(gid); ok {
		if g.Store().Fenced(ks.shard()) {
			movedError(w, gid, ks.shard())
			return
		}
		if stale {
			w.Header().Set(client.HeaderAppliedIndex, strconv.FormatUint(g.Store().AppliedIndex(), 10))
			w.Header().Set(client.HeaderGroup, gid)
			serve(w, g.Store())
			return
		}
		if g.IsLeader() {
			err := g.ReadBarrier(ctx)
			switch {
			case err == nil && g.Store().Fenced(ks.shard()):
				movedError(w, gid, ks.shard())
				return
			case err == nil:
				s.servedHere(w, gid)
				serve(w, g.Store())
				return
			case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled):
				w.Header().Set("Retry-After", "1")
				writeError(w, http.StatusServiceUnavailable, "timed out confirming leadership for a linearizable read")
				return
			case !errors.Is(err, raftgroup.ErrNotLeader):
				w.Header().Set("Retry-After", "1")
				writeError(w, http.StatusServiceUnavailable, err.Error())
				return
			}
		}
	}
	s.forward(ctx, w, r, nil, gid, false)
}

func (s *Server) servedHere(w http.ResponseWriter, gid string) {
	// Straight into the map: Header.Set canonicalizes the name on every
	// call (the names are canonical already), and every write and read
	// sets these two.
	h := w.Header()
	h[headerLeaderHTTP] = []string{s.httpAdv}
	h[headerGroup] = []string{gid}
}

var (
	headerLeaderHTTP = http.CanonicalHeaderKey(client.HeaderLeaderHTTP)
	headerGroup      = http.CanonicalHeaderKey(client.HeaderGroup)
)

// handleMembers answers a group's committed configuration, from its leader
// only (421 elsewhere): a replica that is no longer listed may be destroyed
// on this answer (placement.Local.Membership).
func (s *Server) handleMembers(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("group")
	g, ok := s.host.Group(id)
	if !ok {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no replica of group %q here", id))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
	defer cancel()
	servers, err := g.CommittedServers(ctx)
	if err != nil {
		writeError(w, http.StatusMisdirectedRequest, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, committedMembers{Group: id, Leader: s.cfg.Name, Servers: servers})
}

// committedMembers is the answer of GET /v1/internal/members/{group}.
type committedMembers struct {
	Group   string             `json:"group"`
	Leader  string             `json:"leader"`
	Servers []raftgroup.Server `json:"servers"`
}

func (s *Server) handleStatus(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.localStatus())
}
