package server

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ldcd/ldcd/client"
)

// closedWithin reports whether the node closes c within d (a read ends in
// EOF or a reset, not in the test's own deadline). What the node answers
// before closing is read and dropped.
func closedWithin(c net.Conn, d time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, c)
	if err == nil {
		return true // EOF
	}
	ne, ok := err.(net.Error)
	return !(ok && ne.Timeout())
}

func dialHTTP(t *testing.T, s *Server, send string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", s.HTTPAddr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if send != "" {
		if _, err := io.WriteString(c, send); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// TestSlowClientsTimeOut: connections that send a request too slowly, or
// wait idle, are closed after the configured timeouts (they were held
// forever: 200 slow clients took goroutines 122 -> 572), while a change
// feed, which streams for as long as its client reads, stays open past
// them.
func TestSlowClientsTimeOut(t *testing.T) {
	s := startNodeWith(t, func(c *Config) {
		c.ReadTimeout, c.WriteTimeout, c.IdleTimeout = time.Second, time.Second, time.Second
	})
	base := runtime.NumGoroutine()

	feed, err := http.Get("http://" + s.HTTPAddr() + "/v1/changes/global?from=1")
	if err != nil {
		t.Fatal(err)
	}
	defer feed.Body.Close()
	if feed.StatusCode != http.StatusOK {
		t.Fatalf("change feed: %d", feed.StatusCode)
	}

	slowHeader := dialHTTP(t, s, "PUT /v1/kv/1/k HTTP/1.1\r\nHost: x\r\n")
	slowBody := dialHTTP(t, s, "PUT /v1/kv/1/k HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
	idle := dialHTTP(t, s, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(idle), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	framesIdle, _ := upgrade(t, s)
	framesIdle.SetDeadline(time.Time{})
	framesHalf, _ := upgrade(t, s)
	framesHalf.SetDeadline(time.Time{})
	framesHalf.Write(requestFrame(1, "PUT", "/v1/kv/1/k", "v")[:10])
	var many []net.Conn
	for range 100 {
		many = append(many, dialHTTP(t, s, "PUT /v1/kv/1/k HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n01"))
	}
	for name, c := range map[string]net.Conn{"slow headers": slowHeader, "slow body": slowBody, "idle keep-alive": idle, "idle frames": framesIdle, "half a frame": framesHalf} {
		if !closedWithin(c, 5*time.Second) {
			t.Errorf("%s: still open after 5 s (timeouts of 1 s)", name)
		}
	}
	for i, c := range many {
		if !closedWithin(c, 5*time.Second) {
			t.Fatalf("slow client %d: still open after 5 s", i)
		}
	}
	waitGoroutines := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > base+20 && time.Now().Before(waitGoroutines) {
		time.Sleep(50 * time.Millisecond)
	}
	if got := runtime.NumGoroutine(); got > base+20 {
		t.Errorf("goroutines %d after the slow clients were dropped, %d before them", got, base)
	}

	// The feed outlived every timeout: it still delivers lines (heartbeats
	// every second).
	r := bufio.NewReader(feed.Body)
	deadline := time.Now().Add(3 * time.Second)
	lines := 0
	for time.Now().Before(deadline) {
		if _, err := r.ReadString('\n'); err != nil {
			t.Fatalf("change feed ended after the timeouts: %v", err)
		}
		lines++
	}
	if lines < 2 {
		t.Fatalf("change feed sent %d lines in 3 s", lines)
	}
}

// TestInflightBytesBounded: 64 clients each send 1 MiB of a 1 MiB PUT but
// its last byte, and wait. The node holds no more than its in-flight bound
// (8 MiB here) of their bytes: the clients beyond it wait, then get 503
// with a JSON error. Before the bound every body was read into memory
// (64 concurrent 1 MiB PUTs took RSS to 1 GiB).
func TestInflightBytesBounded(t *testing.T) {
	const bound = 8 << 20
	s := startNodeWith(t, func(c *Config) {
		c.MaxValueSize = 1 << 20
		c.MaxInflightBytes = bound
		c.InflightWait = 500 * time.Millisecond
	})
	var before, during runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	const clients = 64
	body := strings.Repeat("v", 1<<20)
	conns := make([]net.Conn, clients)
	for i := range conns {
		conns[i] = dialHTTP(t, s, fmt.Sprintf("PUT /v1/kv/%d/k HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", i, len(body)))
	}
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			io.WriteString(c, body[:len(body)-1])
		}()
	}
	time.Sleep(2 * time.Second)
	runtime.GC()
	runtime.ReadMemStats(&during)
	held := int64(during.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("64 clients x 1 MiB bodies, bound %d MiB: heap grew %.1f MiB", bound>>20, float64(held)/(1<<20))
	for _, c := range conns {
		c.Write([]byte("v"))
	}
	wg.Wait()
	codes := map[int]int{}
	for i, c := range conns {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			codes[0]++
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		codes[resp.StatusCode]++
		if resp.StatusCode != http.StatusOK {
			var eb client.ErrorBody
			if resp.StatusCode != http.StatusServiceUnavailable || json.Unmarshal(b, &eb) != nil || eb.Error == "" {
				t.Errorf("client %d: %d %.100s, want 200, or 503 with a JSON error", i, resp.StatusCode, b)
			}
		}
	}
	t.Logf("answers: %v", codes)
	if codes[http.StatusServiceUnavailable] == 0 {
		t.Errorf("no client was refused with 503 over an 8 MiB bound: %v", codes)
	}
	if limit := int64(3 * bound); held > limit && !raceEnabled {
		t.Errorf("heap grew %.1f MiB with 64 MiB sent, want at most %d MiB", float64(held)/(1<<20), limit>>20)
	}
	if code, b := do(t, "PUT", "http://"+s.HTTPAddr()+"/v1/kv/1/k", "after"); code != http.StatusOK {
		t.Fatalf("PUT after: %d %s", code, b)
	}
}

// TestMaxConnections: beyond MaxConnections a new connection is not served
// until one of those open closes.
func TestMaxConnections(t *testing.T) {
	s := startNodeWith(t, func(c *Config) { c.MaxConnections = 8 })
	var held []net.Conn
	for range 8 {
		held = append(held, dialHTTP(t, s, "GET /healthz HTTP/1.1\r\nHost: x\r\n")) // headers never end
	}
	time.Sleep(200 * time.Millisecond)
	extra := dialHTTP(t, s, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	r := bufio.NewReader(extra)
	extra.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := http.ReadResponse(r, nil); err == nil {
		t.Fatal("a ninth connection was served with 8 open and a limit of 8")
	}
	held[0].Close()
	extra.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		t.Fatalf("the ninth connection was not served once one closed: %v", err)
	}
	resp.Body.Close()
}
