package raftgroup

import (
	"errors"
	"io"
	"net"
	"reflect"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// TestAppendCodec: an AppendEntries request and its answer come back from
// the wire format field for field, and a frame cut short is an error, not a
// panic or a shorter request.
func TestAppendCodec(t *testing.T) {
	req := &raft.AppendEntriesRequest{
		RPCHeader:    raft.RPCHeader{ProtocolVersion: 3, ID: []byte("n1"), Addr: []byte("127.0.0.1:1")},
		Term:         7,
		Leader:       []byte("127.0.0.1:1"),
		PrevLogEntry: 41, PrevLogTerm: 6, LeaderCommitIndex: 40,
		Entries: []*raft.Log{
			{Index: 42, Term: 7, Type: raft.LogCommand, Data: []byte("put a=1"), Extensions: []byte{1, 2}, AppendedAt: time.Unix(0, 1_700_000_000_123_456_789)},
			{Index: 43, Term: 7, Type: raft.LogNoop},
		},
	}
	b := appendRequest(nil, 9, "g-00-09", req)
	d := hbDecoder{b: b}
	if seq, group := d.u64(), d.str(); seq != 9 || group != "g-00-09" {
		t.Fatalf("seq %d group %q", seq, group)
	}
	var got raft.AppendEntriesRequest
	decodeRequest(&d, &got)
	if d.err != nil || len(d.b) != 0 {
		t.Fatalf("decode: %v, %d bytes left", d.err, len(d.b))
	}
	if !reflect.DeepEqual(&got, req) {
		t.Fatalf("request came back as\n%+v\nwant\n%+v", got, *req)
	}
	for cut := 1; cut < len(b); cut++ {
		d := hbDecoder{b: b[:cut]}
		d.u64()
		d.str()
		var r raft.AppendEntriesRequest
		decodeRequest(&d, &r)
		if d.err == nil {
			t.Fatalf("a request cut to %d of %d bytes decoded", cut, len(b))
		}
	}

	resp := &raft.AppendEntriesResponse{RPCHeader: raft.RPCHeader{ProtocolVersion: 3, ID: []byte("n2"), Addr: []byte("127.0.0.1:2")}, Term: 7, LastLog: 43, Success: true, NoRetryBackoff: true}
	var e hbEncoder
	encodeResponse(&e, resp, nil, "")
	encodeResponse(&e, nil, errors.New("raftgroup: no such group"), "")
	d = hbDecoder{b: e.b}
	var r1, r2 raft.AppendEntriesResponse
	if msg := decodeResponse(&d, &r1); msg != "" || !reflect.DeepEqual(&r1, resp) {
		t.Fatalf("answer came back as %+v (%q), want %+v", r1, msg, *resp)
	}
	if msg := decodeResponse(&d, &r2); msg != "raftgroup: no such group" || d.err != nil {
		t.Fatalf("error answer came back as %q (%v)", msg, d.err)
	}
}

// TestAppendsSilentPeer: a peer that takes an append connection and never
// answers (a partition that drops packets, a paused process) fails the
// appends in flight after the timeout, as NetworkTransport's pipeline does,
// so that raft stops the pipeline instead of waiting on it forever.
func TestAppendsSilentPeer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m, err := newMux(ln, ln.Addr().String(), testLogger(t), false)
	if err != nil {
		t.Fatal(err)
	}
	defer m.close()
	a, err := newAppends(m, 300*time.Millisecond, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	defer a.close()
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			go io.Copy(io.Discard, c) // reads everything, answers nothing
		}
	}()
	pl := newAPPipeline(a.peer(raft.ServerAddress(silent.Addr().String())), "g")
	defer pl.Close()
	req := &raft.AppendEntriesRequest{Term: 1, PrevLogEntry: 1, PrevLogTerm: 1, Entries: []*raft.Log{{Index: 2, Term: 1, Data: []byte("x")}}}
	start := time.Now()
	if _, err := pl.AppendEntries(req, new(raft.AppendEntriesResponse)); err != nil {
		t.Fatal(err)
	}
	select {
	case f := <-pl.Consumer():
		if f.Error() == nil || f.Response().Success {
			t.Fatalf("an unanswered append came back as %+v, %v", f.Response(), f.Error())
		}
		if waited := time.Since(start); waited < 250*time.Millisecond {
			t.Fatalf("failed after %v, before the timeout", waited)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("an append to a silent peer was never failed")
	}
}
