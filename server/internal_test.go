package server

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/ldcd/ldcd/client"
	"github.com/ldcd/ldcd/store"
)

func do(t *testing.T, method, url, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestInternalRoutesRefuseBadFields replays the attacks on the split
// routes of a real node: each is refused with 400 and a JSON error before
// it is proposed, and nothing changes (before the fix: shard 305 fenced
// shard 49 for good, a base near 2^64 let PUT ?cas=0 overwrite a present
// key, a 40,000-byte key panicked the global group's apply, and a purge of
// unfenced shards deleted live keys).
func TestInternalRoutesRefuseBadFields(t *testing.T) {
	s := startNode(t)
	base := "http://" + s.HTTPAddr()
	for _, k := range []string{"/v1/kv/149/k", "/v1/kv/3/k"} {
		if code, body := do(t, "PUT", base+k, "v"); code != http.StatusOK {
			t.Fatalf("PUT %s: %d %s", k, code, body)
		}
	}
	huge := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte("k"), 40000))
	ver := func(v uint64) string { return fmt.Sprint(v) }
	for _, c := range []struct{ name, path, body string }{
		{"fence shard 305", "/v1/internal/split/fence", `{"group":"g-40-49","shards":[305]}`},
		{"fence shard -1", "/v1/internal/split/fence", `{"group":"g-40-49","shards":[-1]}`},
		{"fence no shards", "/v1/internal/split/fence", `{"group":"g-40-49","shards":[]}`},
		{"purge unfenced shards", "/v1/internal/split/purge", `{"group":"g-00-09","shards":[0,1,2,3,4,5,6,7,8,9]}`},
		{"purge shard 100", "/v1/internal/split/purge", `{"group":"g-00-09","shards":[100]}`},
		{"ingest base near 2^64", "/v1/internal/split/ingest", `{"group":"g-40-49","base":18446744073709551000,"kvs":[{"k":"dQAAAAAAAAD5eA==","v":"dg==","ver":1}]}`},
		{"ingest version 0", "/v1/internal/split/ingest", `{"group":"g-40-49","base":100,"kvs":[{"k":"dQAAAAAAAACVaw==","v":"dg==","ver":0}]}`},
		{"ingest version 2^64-1", "/v1/internal/split/ingest", `{"group":"g-40-49","base":100,"kvs":[{"k":"dQAAAAAAAACVaw==","v":"dg==","ver":` + ver(1<<64-1) + `}]}`},
		{"ingest 40,000-byte key", "/v1/internal/split/ingest", `{"group":"global","kvs":[{"k":"` + huge + `","v":"dg==","ver":1}]}`},
		{"ingest empty key", "/v1/internal/split/ingest", `{"group":"global","kvs":[{"k":"","v":"dg==","ver":1}]}`},
		{"ingest huge value", "/v1/internal/split/ingest", `{"group":"global","kvs":[{"k":"Z2s=","v":"` + strings.Repeat("A", 8000) + `","ver":1}]}`},
		{"ingest no group", "/v1/internal/split/ingest", `{"kvs":[{"k":"Z2s=","v":"dg==","ver":1}]}`},
		{"not json", "/v1/internal/split/fence", `{"group":`},
	} {
		code, body := do(t, "POST", base+c.path, c.body)
		var eb client.ErrorBody
		if code != http.StatusBadRequest || json.Unmarshal([]byte(body), &eb) != nil || eb.Error == "" {
			t.Errorf("%s: %d %.200s, want 400 with a JSON error", c.name, code, body)
		}
	}
	// Nothing changed: no shard fenced, the keys are there, CAS create
	// refuses a present key, the node (and its global group) still serves.
	for _, id := range []string{"g-40-49", "g-00-09"} {
		g, _ := s.host.Group(id)
		for sh := range 100 {
			if g.Store().Fenced(sh) {
				t.Fatalf("%s: shard %d fenced", id, sh)
			}
		}
		if g.Store().VersionBase() != 0 {
			t.Fatalf("%s: version base %d", id, g.Store().VersionBase())
		}
	}
	for _, k := range []string{"/v1/kv/149/k", "/v1/kv/3/k"} {
		if code, body := do(t, "GET", base+k, ""); code != http.StatusOK || body != "v" {
			t.Fatalf("GET %s: %d %s", k, code, body)
		}
	}
	if code, body := do(t, "PUT", base+"/v1/kv/149/k?cas=0", "w"); code != http.StatusPreconditionFailed {
		t.Fatalf("PUT ?cas=0 on a present key: %d %s, want 412", code, body)
	}
	if code, body := do(t, "PUT", base+"/v1/global/after", "v"); code != http.StatusOK {
		t.Fatalf("global write after the attacks: %d %s", code, body)
	}
	// A well-formed split step still works.
	if code, body := do(t, "POST", base+"/v1/internal/split/ingest", `{"group":"g-40-49","base":100,"kvs":[{"k":"dQAAAAAAAACVaw==","v":"dg==","ver":7}]}`); code != http.StatusOK {
		t.Fatalf("good ingest: %d %s", code, body)
	}
	_ = store.MaxKeySize
}
