package client

import (
	"bufio"
	"bytes"
	"net/http"
	"reflect"
	"testing"
)

// FuzzParseRequest: the server's decoder of framed requests, from the
// length prefix on (ReadFrame, then ParseRequest). It never panics, never
// yields more headers than the frame could hold, and what it accepts
// encodes back to a frame that decodes the same.
func FuzzParseRequest(f *testing.F) {
	f.Add(appendRequest(nil, 7, "PUT", "/v1/kv/5/a", http.Header{"X-Ldc-Epoch": {"3"}, "Content-Type": {"text/plain"}}, []byte("v")))
	f.Add(appendRequest(nil, 1, "GET", "/v1/global/x", nil, nil))
	f.Add([]byte{0, 0, 0, 9, 0, 0, 0, 1, 0, 0, 0xff, 0xff, 0x03})
	f.Fuzz(func(t *testing.T, b []byte) {
		frame, err := ReadFrame(bufio.NewReader(bytes.NewReader(b)))
		if err != nil {
			return
		}
		id, method, target, h, body, err := ParseRequest(frame)
		if err != nil {
			return
		}
		if len(h) > MaxFrameHeaders || 2*len(h) > len(frame) {
			t.Fatalf("%d headers from a frame of %d bytes", len(h), len(frame))
		}
		again := appendRequest(nil, id, method, target, h, body)
		frame2, err := ReadFrame(bufio.NewReader(bytes.NewReader(again)))
		if err != nil {
			t.Fatal(err)
		}
		id2, method2, target2, h2, body2, err := ParseRequest(frame2)
		if err != nil || id2 != id || method2 != method || target2 != target || !reflect.DeepEqual(h2, h) || !bytes.Equal(body2, body) {
			t.Fatalf("re-encoded request came back as %d %q %q %v %q (%v)", id2, method2, target2, h2, body2, err)
		}
	})
}

// FuzzParseAnswer: the client's decoder of framed answers.
func FuzzParseAnswer(f *testing.F) {
	f.Add(AppendAnswer(nil, 7, 200, http.Header{"X-Ldc-Version": {"12"}}, []byte("v"))[4:])
	f.Add(AppendAnswer(nil, 8, 409, nil, []byte(`{"error":"x"}`))[4:])
	f.Fuzz(func(t *testing.T, frame []byte) {
		id, status, h, body, err := parseAnswer(frame)
		if err != nil {
			return
		}
		if len(h) > MaxFrameHeaders || 2*len(h) > len(frame) {
			t.Fatalf("%d headers from a frame of %d bytes", len(h), len(frame))
		}
		id2, status2, h2, body2, err := parseAnswer(AppendAnswer(nil, id, status, h, body)[4:])
		if err != nil || id2 != id || status2 != status || !reflect.DeepEqual(h2, h) || !bytes.Equal(body2, body) {
			t.Fatalf("re-encoded answer came back as %d %d %v %q (%v)", id2, status2, h2, body2, err)
		}
	})
}
