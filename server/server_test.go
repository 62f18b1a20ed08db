package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ldcd/ldcd/client"
	"github.com/ldcd/ldcd/placement"
)

func freePort(t testing.TB) int {
	t.Helper()
	for {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", p))
		l.Close()
		if err == nil {
			u.Close()
			return p
		}
	}
}

// startNode starts a real single-node cluster in-process.
func startNode(t testing.TB) *Server {
	t.Helper()
	return startNodeWith(t, nil)
}

// startNodeWith is startNode with tune applied to the configuration.
func startNodeWith(t testing.TB, tune func(*Config)) *Server {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Name = "n1"
	cfg.DataDir = t.TempDir()
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.RaftAddr = "127.0.0.1:0"
	cfg.GossipAddr = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cfg.Raft.HeartbeatTimeout = 300 * time.Millisecond
	cfg.Raft.ElectionTimeout = 300 * time.Millisecond
	cfg.Raft.LeaderLeaseTimeout = 300 * time.Millisecond
	cfg.Raft.LeaderHeartbeatTimeout = 750 * time.Millisecond
	cfg.MaxValueSize = 4096
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	if os.Getenv("LDCD_TEST_LOG") != "" {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if tune != nil {
		tune(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	deadline := time.Now().Add(20 * time.Second)
	for {
		p, _ := s.currentPlacement()
		ready := p != nil && len(p.Groups) == 11
		if ready {
			for _, g := range p.Groups {
				if lg, ok := s.host.Group(g.ID); !ok || !lg.IsLeader() {
					ready = false
				}
			}
		}
		if ready {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatal("single node did not become ready")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestDecodeTxn(t *testing.T) {
	ks := keyspace{group: "g-00-09", uid: 5}
	tests := []struct {
		body string
		ok   bool
	}{
		{`{"then":[{"op":"put","key":"a","value":"1"}]}`, true},
		{`{"compare":[{"key":"a","version":3}],"then":[{"op":"get","key":"a"}],"else":[{"op":"delete","key":"a"}]}`, true},
		{`{"compare":[{"key":"a","target":"value","op":"!=","value":"x"}],"then":[{"op":"put","key":"b","value_base64":"AAE="}]}`, true},
		{`{"compare":[{"key":"a","target":"size"}],"then":[{"op":"get","key":"a"}]}`, false},
		{`{"then":[{"op":"get","key":"a","value":"x"}]}`, false},
		{`{"then":[{"op":"put","key":"a","value":"x","value_base64":"eA=="}]}`, false},
		{`{"then":[{"op":"put","key":"a","value":"` + strings.Repeat("v", 101) + `"}]}`, false},
		{`{"then":[{"op":"put","key":"a"}]} {}`, false},
		{`[]`, false},
		{``, false},
	}
	for _, tt := range tests {
		_, cmd, err := decodeTxn([]byte(tt.body), ks, 100)
		if (err == nil) != tt.ok {
			t.Errorf("decodeTxn(%.60s): err %v, want ok=%v", tt.body, err, tt.ok)
		}
		if err == nil && cmd.Validate() != nil {
			t.Errorf("decodeTxn(%.60s) built an invalid command", tt.body)
		}
	}
}

func FuzzDecodeTxn(f *testing.F) {
	f.Add([]byte(`{"compare":[{"key":"a","version":3}],"then":[{"op":"put","key":"a","value":"1"}],"else":[{"op":"get","key":"a"}]}`))
	f.Add([]byte(`{"then":[{"op":"delete","key":"` + strings.Repeat("k", 1024) + `"}]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		_, cmd, err := decodeTxn(body, keyspace{uid: 1}, 1<<10)
		if err == nil {
			if verr := cmd.Validate(); verr != nil {
				t.Fatalf("accepted a txn whose command is invalid: %v", verr)
			}
		}
	})
}

// FuzzQueryValue: queryValue reads the same value as url.Values.Get.
func FuzzQueryValue(f *testing.F) {
	for _, q := range []string{"", "consistency=stale", "timeout=1s&consistency=stale", "cas=3&cas=4",
		"a%3Bb=1&cas=%zz&cas=7", "cas;x=1&cas=2", "c%61s=5", "cas=a+b%20c", "=&&cas", "cas"} {
		f.Add(q, "cas")
	}
	f.Fuzz(func(t *testing.T, raw, key string) {
		r := &http.Request{URL: &url.URL{RawQuery: raw}}
		if got, want := queryValue(r, key), r.URL.Query().Get(key); got != want {
			t.Fatalf("queryValue(%q, %q) = %q, url.Values.Get = %q", raw, key, got, want)
		}
	})
}

// FuzzHTTP throws arbitrary requests at a real node's handler: every answer
// must be a well-formed JSON error or a success, never a panic or a 500.
func FuzzHTTP(f *testing.F) {
	s := startNode(f)
	h := s.routes()
	for _, seed := range []struct{ method, path, body string }{
		{"PUT", "/v1/kv/42/k", "v"}, {"GET", "/v1/kv/42/k", ""}, {"GET", "/v1/kv/42/?prefix=k&limit=2", ""},
		{"DELETE", "/v1/kv/42/k?cas=0", ""}, {"POST", "/v1/txn/42", `{"then":[{"op":"get","key":"k"}]}`},
		{"PUT", "/v1/global/x", "y"}, {"GET", "/v1/global/x?consistency=stale", ""}, {"GET", "/v1/cluster", ""},
		{"GET", "/v1/kv/18446744073709551615/k", ""}, {"PUT", "/v1/kv/1/%00%ff", "v"}, {"GET", "/v1/internal/placement/at", ""},
	} {
		f.Add(seed.method, seed.path, []byte(seed.body))
	}
	f.Fuzz(func(t *testing.T, method, path string, body []byte) {
		switch method {
		case "GET", "PUT", "POST", "DELETE", "PATCH", "HEAD":
		default:
			method = "GET"
		}
		if !strings.HasPrefix(path, "/") || strings.ContainsAny(path, " \r\n\t#") {
			return
		}
		if strings.HasPrefix(path, "/v1/changes/") {
			return // change feeds stream until the client leaves: the cluster tests cover them
		}
		req, err := http.NewRequest(method, "http://node"+path, bytes.NewReader(body))
		if err != nil {
			return
		}
		q := req.URL.Query()
		if q.Get("timeout") == "" {
			q.Set("timeout", "2s")
			req.URL.RawQuery = q.Encode()
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code >= 500 && rec.Code != http.StatusServiceUnavailable && rec.Code != http.StatusGatewayTimeout {
			t.Fatalf("%s %s: %d %s", method, path, rec.Code, rec.Body)
		}
		if rec.Code >= 400 && method != "HEAD" {
			var eb client.ErrorBody
			if err := json.Unmarshal(rec.Body.Bytes(), &eb); err != nil || eb.Error == "" {
				t.Fatalf("%s %s: %d with a body that is not a JSON error: %q", method, path, rec.Code, rec.Body)
			}
		}
	})
}

func TestStartFailureCleansUp(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	cfg := DefaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.RaftAddr = "127.0.0.1:0"
	cfg.HTTPAddr = busy.Addr().String() // taken: New must fail, not panic
	cfg.GossipAddr = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	s, err := New(cfg)
	if err == nil || s != nil {
		t.Fatalf("New with a busy HTTP port: %v, %v; want an error", s, err)
	}
	// What it opened was released: the same data dir opens again.
	cfg.HTTPAddr = "127.0.0.1:0"
	s, err = New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
}

// A stale read reports the applied index its data was read at: a key's
// version can never exceed it (it did, when the index was read first).
func TestStaleReadReportsItsIndex(t *testing.T) {
	s := startNode(t)
	srv := httptest.NewServer(s.routes())
	defer srv.Close()
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			req, _ := http.NewRequest(http.MethodPut, srv.URL+"/v1/kv/7/k", strings.NewReader(fmt.Sprint(i)))
			if resp, err := http.DefaultClient.Do(req); err == nil {
				resp.Body.Close()
			}
		}
	}()
	defer func() { close(stop); <-done }()
	checked := 0
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(srv.URL + "/v1/kv/7/k?consistency=stale")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			continue
		}
		ver, _ := strconv.ParseUint(resp.Header.Get(client.HeaderVersion), 10, 64)
		idx, _ := strconv.ParseUint(resp.Header.Get(client.HeaderAppliedIndex), 10, 64)
		if ver > idx {
			t.Fatalf("stale read of version %d reported applied index %d", ver, idx)
		}
		checked++
	}
	if checked < 100 {
		t.Fatalf("only %d reads checked", checked)
	}
}

func TestHealthzIsReadiness(t *testing.T) {
	s := startNode(t)
	srv := httptest.NewServer(s.routes())
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("a serving node's healthz: %d", resp.StatusCode)
	}
	p, _ := s.currentPlacement()
	if r := s.notReady(nil); r == "" {
		t.Fatal("ready without a placement")
	}
	q := p.Clone()
	q.Groups = append(q.Groups, placement.GroupPlacement{ID: "g-x", Replicas: []placement.Replica{{Node: s.cfg.Name, Voter: true}}})
	if r := s.notReady(q); !strings.Contains(r, "g-x") {
		t.Fatalf("ready though a replica it should host is missing: %q", r)
	}
}
