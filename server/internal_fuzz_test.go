package server

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/ldcd/ldcd/client"
	"github.com/ldcd/ldcd/store"
)

// FuzzInternalRoutes throws arbitrary bodies at a real node's split routes
// (fence, purge, ingest) and queries at export. Every answer is a success
// or a JSON error, never a 500; nothing refused by the API limits is ever
// answered 200; and the node's state machines never panic (a panic in an
// apply would end the fuzzing process).
func FuzzInternalRoutes(f *testing.F) {
	s := startNode(f)
	h := s.routes()
	for _, seed := range []struct {
		route uint8
		body  string
	}{
		{0, `{"group":"g-40-49","shards":[45]}`},
		{0, `{"group":"g-40-49","shards":[305]}`},
		{1, `{"group":"g-00-09","shards":[0,1,2]}`},
		{2, `{"group":"g-40-49","base":100,"kvs":[{"k":"dQAAAAAAAACVaw==","v":"dg==","ver":7}]}`},
		{2, `{"group":"global","base":18446744073709551000,"kvs":[{"k":"Z2s=","v":"dg==","ver":0}]}`},
		{3, `group=g-00-09&lo=0&hi=9`},
		{3, `group=g-00-09&lo=-1&hi=100&after=%%`},
	} {
		f.Add(seed.route, []byte(seed.body))
	}
	f.Fuzz(func(t *testing.T, route uint8, body []byte) {
		var req *http.Request
		switch route % 4 {
		case 0:
			req = httptest.NewRequest("POST", "/v1/internal/split/fence?timeout=2s", bytes.NewReader(body))
		case 1:
			req = httptest.NewRequest("POST", "/v1/internal/split/purge?timeout=2s", bytes.NewReader(body))
		case 2:
			req = httptest.NewRequest("POST", "/v1/internal/split/ingest?timeout=2s", bytes.NewReader(body))
		case 3:
			r, err := http.NewRequest("GET", "/v1/internal/split/export?"+string(body), nil)
			if err != nil {
				return
			}
			req = r
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code >= 500 && rec.Code != http.StatusServiceUnavailable && rec.Code != http.StatusGatewayTimeout {
			t.Fatalf("%s: %d %s", req.URL, rec.Code, rec.Body)
		}
		if rec.Code >= 400 {
			var eb client.ErrorBody
			if err := json.Unmarshal(rec.Body.Bytes(), &eb); err != nil || eb.Error == "" {
				t.Fatalf("%s: %d with a body that is not a JSON error: %q", req.URL, rec.Code, rec.Body)
			}
			return
		}
		if rec.Code != http.StatusOK || route%4 == 3 {
			return
		}
		// Accepted: it must have been within every limit.
		var in splitIngestRequest
		var fence splitFenceRequest
		json.Unmarshal(body, &in)
		json.Unmarshal(body, &fence)
		if route%4 != 2 {
			for _, sh := range fence.Shards {
				if sh < 0 || sh > 99 {
					t.Fatalf("%s accepted shard %d", req.URL, sh)
				}
			}
			return
		}
		if in.Base > store.MaxVersionBase {
			t.Fatalf("ingest accepted base %d", in.Base)
		}
		for _, kv := range in.KVs {
			if kv.Version == 0 || len(kv.Key) == 0 || len(kv.Key) > store.MaxStoredKeySize || len(kv.Value) > s.cfg.MaxValueSize {
				t.Fatalf("ingest accepted key of %d bytes, value of %d, version %d", len(kv.Key), len(kv.Value), kv.Version)
			}
		}
	})
}
