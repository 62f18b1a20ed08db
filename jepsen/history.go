package jepsen

import (
	"bufio"
	"encoding/json"
	"math"
	"os"
	"sort"
	"sync"
	"time"
)

// Operation outcomes.
const (
	StatusOK   = "ok"   // it happened, with this output
	StatusFail = "fail" // it certainly did not happen
	StatusInfo = "info" // unknown: it may or may not have happened
)

// Op is one completed client operation of a history, with its invocation
// and completion times. Fields unused by a workload are empty.
type Op struct {
	Process int    `json:"process"`
	F       string `json:"f"`
	Key     string `json:"key,omitempty"`
	Status  string `json:"status"`
	Call    int64  `json:"call"`   // ns since the run began
	Return  int64  `json:"return"` // ns since the run began; math.MaxInt64 for info
	Error   string `json:"error,omitempty"`

	// register
	Value   string `json:"value,omitempty"`   // written, or read
	Old     string `json:"old,omitempty"`     // cas: expected value
	Found   bool   `json:"found,omitempty"`   // read: the key existed
	Version uint64 `json:"version,omitempty"` // write: the version made; read: the version seen

	// bank
	From     int   `json:"from,omitempty"`
	To       int   `json:"to,omitempty"`
	Amount   int   `json:"amount,omitempty"`
	Balances []int `json:"balances,omitempty"`

	// monotonic reads (stale and CZone reads): the serving replica's index
	Node  string `json:"node,omitempty"`
	Index uint64 `json:"index,omitempty"`
}

// Recorder collects a history from concurrent clients.
type Recorder struct {
	start time.Time
	mu    sync.Mutex // guards ops
	ops   []Op
}

// NewRecorder starts a history now.
func NewRecorder() *Recorder { return &Recorder{start: time.Now()} }

// Now returns the time since the run began, for Op.Call.
func (r *Recorder) Now() int64 { return int64(time.Since(r.start)) }

// Add records op, stamping its return time (infinite for an unknown
// outcome, which may take effect at any time after its call).
func (r *Recorder) Add(op Op) {
	op.Return = r.Now()
	if op.Status == StatusInfo {
		op.Return = math.MaxInt64
	}
	r.mu.Lock()
	r.ops = append(r.ops, op)
	r.mu.Unlock()
}

// Ops returns the history ordered by call time.
func (r *Recorder) Ops() []Op {
	r.mu.Lock()
	out := append([]Op(nil), r.ops...)
	r.mu.Unlock()
	sort.SliceStable(out, func(i, j int) bool { return out[i].Call < out[j].Call })
	return out
}

// WriteJSONL writes the history, one JSON object a line.
func WriteJSONL(path string, ops []Op) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	enc := json.NewEncoder(w)
	for _, op := range ops {
		if err := enc.Encode(op); err != nil {
			f.Close()
			return err
		}
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// ReadJSONL reads a history written by WriteJSONL.
func ReadJSONL(path string) ([]Op, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []Op
	dec := json.NewDecoder(f)
	for dec.More() {
		var op Op
		if err := dec.Decode(&op); err != nil {
			return nil, err
		}
		out = append(out, op)
	}
	return out, nil
}
