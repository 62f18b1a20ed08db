package client

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ldcd/ldcd/internal/readn"
)

// Framed connections. One HTTP/1.1 request per round trip costs a write and
// a read system call on each side and a full parse; at tens of thousands of
// small requests a second that was a third of the CPU of both client and
// server. The client instead upgrades a few connections per node
// (`GET /v1/frames`, `Upgrade: ldcd-frames`) and sends its key-value
// requests over them as frames, many in flight at once: a writer batches the
// frames queued while it was busy into one write, and the server answers in
// batches too. A frame carries an HTTP request (method, target, a few
// headers, body) and its answer carries status, headers and body, so the
// server runs the very same handlers. Only the key-value, global and
// transaction endpoints go over frames; everything else (feeds, admin) stays
// plain HTTP.
//
// Frame: u32 length of the rest, u32 request id, then for a request:
// method, target, headers, body; for an answer: u16 status, headers, body.
// Strings are uvarint-length-prefixed; headers are a uvarint count of
// name/value pairs.

// FramesPath is the endpoint that upgrades a connection to frames, and
// FramesProtocol the Upgrade token.
const (
	FramesPath     = "/v1/frames"
	FramesProtocol = "ldcd-frames"
	// MaxFrame bounds one frame.
	MaxFrame = 64 << 20
)

// HeaderFrameTimeout carries, on a framed request, how long the client
// still waits for it (Go duration). The server abandons the request when it
// runs out, as it would a plain HTTP request whose connection the client
// closed: otherwise a write the client gave up on could still be proposed
// long after, behind writes the client sent later.
const HeaderFrameTimeout = "X-Ldc-Frame-Timeout"

// framesPerNode is how many framed connections the client keeps per node.
// One: the server runs the frames of a connection concurrently anyway, and
// fewer connections mean fuller batches, so fewer system calls per request
// on both sides (64 clients' stale gets: 14.8k and 13.0k/s with four,
// 24.0k and 27.3k/s with one and writerYields, side by side).
const framesPerNode = 1

// writerYields is how many times a connection's writer yields the processor
// after it is woken and before it takes the queue, so that requests about to
// be queued by goroutines already runnable join the same write. A yield
// costs next to nothing when nobody else is runnable (one client's puts, two
// runs each: p50 1.48 and 1.82 ms with it, 1.57 and 1.76 ms without).
const writerYields = 2

// FramedPath reports whether a request to path (or path?query) may go over
// frames.
func FramedPath(path string) bool {
	return strings.HasPrefix(path, "/v1/kv/") || strings.HasPrefix(path, "/v1/global/") || strings.HasPrefix(path, "/v1/txn/")
}

// errNoFrames marks a node that does not speak frames: the client uses
// plain HTTP with it.
var errNoFrames = errors.New("ldcd: node does not serve frames")

type framePool struct {
	dial    time.Duration
	mu      sync.Mutex // guards nodes
	nodes   map[string]*frameNode
	closed  bool
	counter atomic.Uint64
}

type frameNode struct {
	mu    sync.Mutex // guards conns and off
	conns [framesPerNode]*frameConn
	off   time.Time // the node refused frames: plain HTTP until then
}

func newFramePool(dial time.Duration) *framePool {
	return &framePool{dial: dial, nodes: map[string]*frameNode{}}
}

func (p *framePool) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for _, n := range p.nodes {
		n.mu.Lock()
		for i, c := range n.conns {
			if c != nil {
				c.fail(net.ErrClosed)
				n.conns[i] = nil
			}
		}
		n.mu.Unlock()
	}
}

// conn returns a framed connection to addr, dialling one if needed.
func (p *framePool) conn(ctx context.Context, addr string) (*frameConn, error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, net.ErrClosed
	}
	n := p.nodes[addr]
	if n == nil {
		n = &frameNode{}
		p.nodes[addr] = n
	}
	p.mu.Unlock()
	slot := int(p.counter.Add(1) % framesPerNode)
	n.mu.Lock()
	defer n.mu.Unlock()
	if time.Now().Before(n.off) {
		return nil, errNoFrames
	}
	if c := n.conns[slot]; c != nil && !c.broken() {
		return c, nil
	}
	c, err := dialFrames(ctx, addr, p.dial)
	if errors.Is(err, errNoFrames) {
		n.off = time.Now().Add(time.Minute)
	}
	if err != nil {
		return nil, err
	}
	n.conns[slot] = c
	return c, nil
}

func dialFrames(ctx context.Context, addr string, timeout time.Duration) (*frameConn, error) {
	d := net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	// Nothing of a request has been sent until the upgrade is done: report
	// failures as dial errors, which the client retries even for writes.
	dialErr := func(err error) error { return &net.OpError{Op: "dial", Net: "tcp", Err: err} }
	nc.SetDeadline(time.Now().Add(timeout))
	req := "GET " + FramesPath + " HTTP/1.1\r\nHost: " + addr + "\r\nConnection: Upgrade\r\nUpgrade: " + FramesProtocol + "\r\n\r\n"
	if _, err := io.WriteString(nc, req); err != nil {
		nc.Close()
		return nil, dialErr(err)
	}
	r := bufio.NewReaderSize(nc, 64<<10)
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		nc.Close()
		return nil, dialErr(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		nc.Close()
		return nil, fmt.Errorf("%w (%s)", errNoFrames, resp.Status)
	}
	nc.SetDeadline(time.Time{})
	c := &frameConn{nc: nc, r: r, pending: map[uint32]chan frameAnswer{}, kick: make(chan struct{}, 1), done: make(chan struct{})}
	go c.readLoop()
	go c.writeLoop()
	return c, nil
}

type frameAnswer struct {
	resp *response
	err  error
}

// frameConn is one framed connection: requests are queued, written in
// batches by writeLoop, and matched to answers by id in readLoop.
type frameConn struct {
	nc net.Conn
	r  *bufio.Reader

	mu      sync.Mutex // guards the fields below
	nextID  uint32
	pending map[uint32]chan frameAnswer
	queue   []byte // frames waiting for the writer
	err     error  // set once the connection failed

	kick chan struct{}
	done chan struct{}
}

func (c *frameConn) broken() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err != nil
}

// fail ends the connection: every request in flight gets err.
func (c *frameConn) fail(err error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err = err
	pending := c.pending
	c.pending = nil
	c.queue = nil
	close(c.done)
	c.mu.Unlock()
	c.nc.Close()
	for _, ch := range pending {
		ch <- frameAnswer{err: err}
	}
}

// do sends one request and waits for its answer.
func (c *frameConn) do(ctx context.Context, method, target string, header http.Header, body []byte) (*response, error) {
	ch := make(chan frameAnswer, 1)
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return nil, err
	}
	c.nextID++
	id := c.nextID
	c.pending[id] = ch
	c.queue = appendRequest(c.queue, id, method, target, header, body)
	c.mu.Unlock()
	select {
	case c.kick <- struct{}{}:
	default:
	}
	select {
	case a := <-ch:
		return a.resp, a.err
	case <-ctx.Done():
		c.mu.Lock()
		if c.pending != nil {
			delete(c.pending, id)
		}
		c.mu.Unlock()
		return nil, ctx.Err()
	}
}

func (c *frameConn) writeLoop() {
	var buf []byte
	for {
		select {
		case <-c.kick:
		case <-c.done:
			return
		}
		for range writerYields {
			runtime.Gosched()
		}
		c.mu.Lock()
		buf, c.queue = c.queue, buf[:0]
		c.mu.Unlock()
		if len(buf) == 0 {
			continue
		}
		if _, err := c.nc.Write(buf); err != nil {
			c.fail(err)
			return
		}
	}
}

func (c *frameConn) readLoop() {
	for {
		frame, err := ReadFrame(c.r)
		if err != nil {
			c.fail(err)
			return
		}
		id, status, header, rest, err := parseAnswer(frame)
		if err != nil {
			c.fail(err)
			return
		}
		c.mu.Lock()
		ch := c.pending[id]
		delete(c.pending, id)
		c.mu.Unlock()
		if ch != nil {
			ch <- frameAnswer{resp: &response{status: status, header: header, body: rest}}
		}
	}
}

// parseAnswer splits an answer frame (AppendAnswer) into its parts.
func parseAnswer(frame []byte) (id uint32, status int, h http.Header, body []byte, err error) {
	if len(frame) < 6 {
		return 0, 0, nil, nil, errors.New("ldcd: short frame")
	}
	id = binary.BigEndian.Uint32(frame)
	status = int(binary.BigEndian.Uint16(frame[4:]))
	if h, body, err = ParseHeader(frame[6:]); err != nil {
		return 0, 0, nil, nil, err
	}
	return id, status, h, body, nil
}

// appendRequest appends a framed request (ParseRequest reads it) to b.
func appendRequest(b []byte, id uint32, method, target string, h http.Header, body []byte) []byte {
	start := len(b)
	b = append(b, 0, 0, 0, 0)
	b = binary.BigEndian.AppendUint32(b, id)
	b = appendString(b, method)
	b = appendString(b, target)
	b = appendHeader(b, h)
	b = append(b, body...)
	binary.BigEndian.PutUint32(b[start:], uint32(len(b)-start-4))
	return b
}

// ReadFrame reads one frame (without its length prefix) from r.
func ReadFrame(r *bufio.Reader) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n > MaxFrame {
		return nil, fmt.Errorf("ldcd: frame of %d bytes", n)
	}
	// By the bytes that arrive, not the length declared: 16 connections
	// declaring 64 MiB and sending 1 KiB each took 1 GiB.
	return readn.Full(r, int(n))
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// appendHeader appends h's first values.
func appendHeader(b []byte, h http.Header) []byte {
	b = binary.AppendUvarint(b, uint64(len(h)))
	for k, v := range h {
		b = appendString(b, k)
		if len(v) > 0 {
			b = appendString(b, v[0])
		} else {
			b = appendString(b, "")
		}
	}
	return b
}

// AppendAnswer appends a framed answer to request id to b.
func AppendAnswer(b []byte, id uint32, status int, h http.Header, body []byte) []byte {
	start := len(b)
	b = append(b, 0, 0, 0, 0)
	b = binary.BigEndian.AppendUint32(b, id)
	b = binary.BigEndian.AppendUint16(b, uint16(status))
	b = appendHeader(b, h)
	b = append(b, body...)
	binary.BigEndian.PutUint32(b[start:], uint32(len(b)-start-4))
	return b
}

var errBadFrame = errors.New("ldcd: malformed frame")

// ParseString reads a length-prefixed string from b.
func ParseString(b []byte) (string, []byte, error) {
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(len(b)-k) {
		return "", nil, errBadFrame
	}
	return string(b[k : k+int(n)]), b[k+int(n):], nil
}

// MaxFrameHeaders bounds the headers of one frame.
const MaxFrameHeaders = 256

// ParseHeader reads a header block from b. The count it declares is
// checked against MaxFrameHeaders and against what b could hold (a header
// takes two bytes at least) before anything is allocated: the map sized by
// a count of one per byte took 1.7 GiB for a 16 MiB frame.
func ParseHeader(b []byte) (http.Header, []byte, error) {
	n, k := binary.Uvarint(b)
	if k <= 0 || n > MaxFrameHeaders || n > uint64(len(b)-k)/2 {
		return nil, nil, errBadFrame
	}
	b = b[k:]
	h := make(http.Header, n)
	for i := uint64(0); i < n; i++ {
		var key, val string
		var err error
		if key, b, err = ParseString(b); err != nil {
			return nil, nil, err
		}
		if val, b, err = ParseString(b); err != nil {
			return nil, nil, err
		}
		h[key] = []string{val}
	}
	return h, b, nil
}

// ParseRequest splits a request frame into its parts.
func ParseRequest(frame []byte) (id uint32, method, target string, h http.Header, body []byte, err error) {
	if len(frame) < 4 {
		return 0, "", "", nil, nil, errBadFrame
	}
	id = binary.BigEndian.Uint32(frame)
	b := frame[4:]
	if method, b, err = ParseString(b); err != nil {
		return
	}
	if target, b, err = ParseString(b); err != nil {
		return
	}
	if h, b, err = ParseHeader(b); err != nil {
		return
	}
	return id, method, target, h, b, nil
}
