package raftgroup

import (
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// The decoders of what peers send on the raft port: an _appends request
// frame, its answer, a heartbeat batch. None may panic, allocate for more
// than the frame can hold, or accept what it would not encode back the
// same.

func decodeAppendFrame(b []byte) (uint64, string, *raft.AppendEntriesRequest, error) {
	d := hbDecoder{b: b}
	seq := d.u64()
	group := d.str()
	req := &raft.AppendEntriesRequest{}
	decodeRequest(&d, req)
	return seq, group, req, d.err
}

func FuzzAppendRequest(f *testing.F) {
	f.Add(appendRequest(nil, 9, "g-00-09", &raft.AppendEntriesRequest{
		RPCHeader: raft.RPCHeader{ProtocolVersion: 3, ID: []byte("n1"), Addr: []byte("127.0.0.1:1")},
		Term:      7, Leader: []byte("127.0.0.1:1"), PrevLogEntry: 41, PrevLogTerm: 6, LeaderCommitIndex: 40,
		Entries: []*raft.Log{
			{Index: 42, Term: 7, Type: raft.LogCommand, Data: []byte("put a=1"), Extensions: []byte{1, 2}, AppendedAt: time.Unix(0, 1_700_000_000_123_456_789)},
			{Index: 43, Term: 7, Type: raft.LogNoop},
		},
	}))
	f.Add(appendsBomb(4096)[4:])
	f.Fuzz(func(t *testing.T, b []byte) {
		seq, group, req, err := decodeAppendFrame(b)
		if err != nil {
			return
		}
		if len(req.Entries) > apMaxEntries || len(req.Entries)*apMinEntryBytes > len(b) {
			t.Fatalf("%d entries from a frame of %d bytes", len(req.Entries), len(b))
		}
		seq2, group2, req2, err := decodeAppendFrame(appendRequest(nil, seq, group, req))
		if err != nil || seq2 != seq || group2 != group || !reflect.DeepEqual(req2, req) {
			t.Fatalf("re-encoded request came back as %d %q %+v (%v), want %d %q %+v", seq2, group2, req2, err, seq, group, req)
		}
	})
}

func FuzzAppendResponse(f *testing.F) {
	var e hbEncoder
	e.u64(3)
	encodeResponse(&e, &raft.AppendEntriesResponse{RPCHeader: raft.RPCHeader{ProtocolVersion: 3, ID: []byte("n2")}, Term: 7, LastLog: 43, Success: true}, nil, "")
	f.Add(e.b)
	e = hbEncoder{}
	e.u64(4)
	encodeResponse(&e, nil, errors.New("raftgroup: no such group"), "")
	f.Add(e.b)
	f.Fuzz(func(t *testing.T, b []byte) {
		d := hbDecoder{b: b}
		d.u64()
		var resp raft.AppendEntriesResponse
		msg := decodeResponse(&d, &resp)
		if d.err != nil || msg != "" {
			return
		}
		var e hbEncoder
		encodeResponse(&e, &resp, nil, "")
		d = hbDecoder{b: e.b}
		var again raft.AppendEntriesResponse
		if decodeResponse(&d, &again); d.err != nil || !reflect.DeepEqual(again, resp) {
			t.Fatalf("re-encoded answer came back as %+v (%v), want %+v", again, d.err, resp)
		}
	})
}

func encodeHeartbeats(batch []hbIn) []byte {
	var e hbEncoder
	e.u64(uint64(len(batch)))
	for _, hb := range batch {
		e.str(hb.group)
		e.u64(uint64(hb.req.ProtocolVersion))
		e.bytes(hb.req.ID)
		e.bytes(hb.req.Addr)
		e.u64(hb.req.Term)
		e.bytes(hb.req.Leader)
	}
	return e.b
}

func FuzzHeartbeats(f *testing.F) {
	f.Add(encodeHeartbeats([]hbIn{
		{group: "g-00-09", req: &raft.AppendEntriesRequest{RPCHeader: raft.RPCHeader{ProtocolVersion: 3, ID: []byte("n1"), Addr: []byte("a:1")}, Term: 4, Leader: []byte("a:1")}},
		{group: "global", req: &raft.AppendEntriesRequest{Term: 9}},
	}))
	f.Add([]byte{0xff, 0xff, 0xff, 0x7f})
	f.Fuzz(func(t *testing.T, b []byte) {
		batch, err := decodeHeartbeats(b)
		if err != nil {
			return
		}
		if len(batch) > hbMaxBatch || len(batch)*hbMinBytes > len(b) {
			t.Fatalf("%d heartbeats from a frame of %d bytes", len(batch), len(b))
		}
		again, err := decodeHeartbeats(encodeHeartbeats(batch))
		if err != nil || !reflect.DeepEqual(again, batch) {
			t.Fatalf("re-encoded batch came back as %+v (%v), want %+v", again, err, batch)
		}
	})
}
