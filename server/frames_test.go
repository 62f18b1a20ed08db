package server

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ldcd/ldcd/client"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestFramedRequests drives a real node through the client over frames:
// puts, reads of both kinds, deletes, transactions, errors and many
// requests in flight at once, and checks they went over frames.
func TestFramedRequests(t *testing.T) {
	s := startNode(t)
	cl, err := client.New(client.Config{Endpoints: []string{s.HTTPAddr()}})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ver, err := cl.Put(ctx, 42, "k", []byte("v1"))
	if err != nil {
		t.Fatal(err)
	}
	if v, err := cl.Get(ctx, 42, "k"); err != nil || string(v.Data) != "v1" || v.Version != ver {
		t.Fatalf("get: %+v, %v; want v1 at %d", v, err, ver)
	}
	if v, err := cl.Get(ctx, 42, "k", client.Stale()); err != nil || string(v.Data) != "v1" || v.AppliedIndex < ver {
		t.Fatalf("stale get: %+v, %v", v, err)
	}
	if _, err := cl.Get(ctx, 42, "missing"); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("get of a missing key: %v, want ErrNotFound", err)
	}
	res, err := cl.Txn(ctx, 42, client.TxnRequest{
		Compare: []client.Compare{{Key: "k", Version: ver}},
		Then:    []client.Op{{Op: "put", Key: "k", Value: "v2"}},
	})
	if err != nil || !res.Succeeded {
		t.Fatalf("txn: %+v, %v", res, err)
	}
	if ok, err := cl.Delete(ctx, 42, "k"); err != nil || !ok {
		t.Fatalf("delete: %v, %v", ok, err)
	}
	// Many requests in flight share the framed connections.
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for i := 0; i < 200; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := fmt.Sprintf("k%d", i)
			if _, err := cl.Put(ctx, uint64(i), key, []byte(key)); err != nil {
				errs <- err
				return
			}
			v, err := cl.Get(ctx, uint64(i), key)
			if err != nil {
				errs <- err
			} else if string(v.Data) != key {
				errs <- fmt.Errorf("uid %d: read %q, want %q", i, v.Data, key)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := testutil.ToFloat64(s.metrics.requests.WithLabelValues(client.FramesPath, "200")); n < 1 {
		t.Fatalf("%v connections upgraded to frames, want at least one", n)
	}
	// With NoFrames the same calls are plain HTTP.
	before := testutil.ToFloat64(s.metrics.requests.WithLabelValues(client.FramesPath, "200"))
	plain, err := client.New(client.Config{Endpoints: []string{s.HTTPAddr()}, NoFrames: true})
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if _, err := plain.Put(ctx, 7, "p", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if after := testutil.ToFloat64(s.metrics.requests.WithLabelValues(client.FramesPath, "200")); after != before {
		t.Fatalf("a NoFrames client upgraded %v connections", after-before)
	}
}

// upgrade opens a framed connection to s by hand.
func upgrade(t *testing.T, s *Server) (net.Conn, *bufio.Reader) {
	t.Helper()
	conn, err := net.Dial("tcp", s.HTTPAddr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: %s\r\n\r\n", client.FramesPath, client.FramesProtocol)
	r := bufio.NewReader(conn)
	resp, err := http.ReadResponse(r, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v, %v", resp, err)
	}
	return conn, r
}

func requestFrame(id uint32, method, target string, body string) []byte {
	var b []byte
	b = binary.BigEndian.AppendUint32(b, id)
	for _, s := range []string{method, target} {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	b = binary.AppendUvarint(b, 0) // no headers
	b = append(b, body...)
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(b))), b...)
}

func TestFramesBadInput(t *testing.T) {
	s := startNode(t)
	// Without the upgrade headers: 426 and a JSON error.
	resp, err := http.Get("http://" + s.HTTPAddr() + client.FramesPath)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUpgradeRequired || !strings.Contains(string(body), "Upgrade") {
		t.Fatalf("plain GET %s: %d %s", client.FramesPath, resp.StatusCode, body)
	}

	// A framed request for a route that is not served over frames: a 400
	// answer, and the connection goes on serving.
	conn, r := upgrade(t, s)
	conn.Write(requestFrame(1, "GET", "/v1/cluster", ""))
	conn.Write(requestFrame(2, "PUT", "/v1/kv/5/a", "b"))
	got := map[uint32]int{}
	for len(got) < 2 {
		f, err := client.ReadFrame(r)
		if err != nil {
			t.Fatal(err)
		}
		got[binary.BigEndian.Uint32(f)] = int(binary.BigEndian.Uint16(f[4:]))
	}
	if got[1] != http.StatusBadRequest || got[2] != http.StatusOK {
		t.Fatalf("answers %v, want 1: 400 and 2: 200", got)
	}

	// Garbage: the node closes that connection and keeps serving.
	conn2, r2 := upgrade(t, s)
	conn2.Write([]byte{0, 0, 0, 3, 0xff, 0xff, 0xff})
	if _, err := client.ReadFrame(r2); err == nil {
		t.Fatal("a malformed frame was answered")
	}
	conn3, _ := upgrade(t, s)
	conn3.Write([]byte{0xff, 0xff, 0xff, 0xff}) // claims 4 GiB
	cl, err := client.New(client.Config{Endpoints: []string{s.HTTPAddr()}})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := cl.Get(ctx, 5, "a"); err != nil {
		t.Fatalf("the node stopped serving after bad frames: %v", err)
	}
}
