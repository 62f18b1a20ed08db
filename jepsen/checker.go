package jepsen

import (
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"
)

// Verdict is a checker's result.
type Verdict struct {
	Valid bool
	// Unknown is set when the linearizability search timed out.
	Unknown bool
	Reason  string
	// Visualization is the path of porcupine's HTML for a failure.
	Visualization string
}

func (v Verdict) String() string {
	switch {
	case v.Unknown:
		return "UNKNOWN: " + v.Reason
	case v.Valid:
		return "ok"
	}
	return "INVALID: " + v.Reason
}

type registerIn struct {
	F        string // read, write, cas
	Value    string // write: the value; cas: the new value
	Old      string // cas: expected
	Status   string
	ReadVal  string
	ReadSeen bool
}

// registerModel is a single register per key; "" means absent. A write or
// cas with an unknown outcome may take effect at any point after its call,
// or never (porcupine places it last).
var registerModel = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		var keys []string
		for _, op := range history {
			k := op.Metadata.(string)
			if _, ok := byKey[k]; !ok {
				keys = append(keys, k)
			}
			byKey[k] = append(byKey[k], op)
		}
		sort.Strings(keys)
		out := make([][]porcupine.Operation, 0, len(keys))
		for _, k := range keys {
			out = append(out, byKey[k])
		}
		return out
	},
	Init: func() interface{} { return "" },
	Step: func(state, input, output interface{}) (bool, interface{}) {
		s := state.(string)
		in := input.(registerIn)
		switch in.F {
		case "read":
			return in.ReadVal == s, s
		case "write":
			return true, in.Value
		case "cas":
			switch in.Status {
			case StatusOK:
				return s == in.Old, in.Value
			case StatusFail:
				return s != in.Old, s
			default: // unknown
				if s == in.Old {
					return true, in.Value
				}
				return true, s
			}
		}
		return false, s
	},
	DescribeOperation: func(input, output interface{}) string {
		in := input.(registerIn)
		switch in.F {
		case "read":
			return fmt.Sprintf("read → %q", in.ReadVal)
		case "write":
			return fmt.Sprintf("write %q (%s)", in.Value, in.Status)
		}
		return fmt.Sprintf("cas %q→%q (%s)", in.Old, in.Value, in.Status)
	},
	DescribeState: func(state interface{}) string { return fmt.Sprintf("%q", state) },
}

// CheckRegister checks a register history for linearizability, key by key.
// Definite failures of writes are left out (they did not happen), as are
// reads that failed.
func CheckRegister(ops []Op, dir string, timeout time.Duration) Verdict {
	var hist []porcupine.Operation
	for _, op := range ops {
		in := registerIn{F: op.F, Value: op.Value, Old: op.Old, Status: op.Status}
		switch {
		case op.F == "read" && op.Status != StatusOK:
			continue
		case op.F == "read":
			in.ReadVal = op.Value
		case op.F == "write" && op.Status == StatusFail:
			continue
		case op.F == "cas" && op.Status == StatusFail && op.Error != "" && op.Error != "compare failed":
			continue // refused before being applied: it did not happen
		}
		hist = append(hist, porcupine.Operation{ClientId: op.Process, Input: in, Call: op.Call, Return: op.Return, Metadata: op.Key})
	}
	return check(registerModel, hist, dir, timeout)
}

func check(model porcupine.Model, hist []porcupine.Operation, dir string, timeout time.Duration) Verdict {
	res, info := porcupine.CheckOperationsVerbose(model, hist, timeout)
	switch res {
	case porcupine.Ok:
		return Verdict{Valid: true}
	case porcupine.Unknown:
		return Verdict{Unknown: true, Reason: fmt.Sprintf("linearizability search of %d operations timed out after %v", len(hist), timeout)}
	}
	v := Verdict{Reason: fmt.Sprintf("history of %d operations is not linearizable", len(hist))}
	if dir != "" {
		path := filepath.Join(dir, "linearizability.html")
		if err := porcupine.VisualizePath(model, info, path); err == nil {
			v.Visualization = path
		}
	}
	return v
}

const bankAccounts = 5

type bankState [bankAccounts]int

type bankIn struct {
	F        string // read, transfer
	From, To int
	Amount   int
	Status   string
	Balances bankState
}

// bankModel is one user's accounts: reads see all balances at once, and
// transfers move money between two of them without overdrawing.
var bankModel = porcupine.Model{
	Partition: registerModel.Partition,
	Step: func(state, input, output interface{}) (bool, interface{}) {
		s := state.(bankState)
		in := input.(bankIn)
		switch in.F {
		case "read":
			return in.Balances == s, s
		case "transfer":
			if s[in.From] < in.Amount {
				return in.Status != StatusOK, s
			}
			s[in.From] -= in.Amount
			s[in.To] += in.Amount
			return true, s
		}
		return false, s
	},
	DescribeOperation: func(input, output interface{}) string {
		in := input.(bankIn)
		if in.F == "read" {
			return fmt.Sprintf("read %v", in.Balances)
		}
		return fmt.Sprintf("transfer %d from %d to %d (%s)", in.Amount, in.From, in.To, in.Status)
	},
	DescribeState: func(state interface{}) string { return fmt.Sprint(state) },
}

// CheckBank checks that every read of a user's accounts sums to total with
// no negative balance, and that the history is linearizable. Transfers that
// definitely failed are left out.
func CheckBank(ops []Op, initial int, dir string, timeout time.Duration) Verdict {
	total := initial * bankAccounts
	var hist []porcupine.Operation
	for _, op := range ops {
		in := bankIn{F: op.F, From: op.From, To: op.To, Amount: op.Amount, Status: op.Status}
		switch {
		case op.Status == StatusFail:
			continue
		case op.F == "read" && op.Status != StatusOK:
			continue
		case op.F == "read":
			sum := 0
			for i, b := range op.Balances {
				if b < 0 {
					return Verdict{Reason: fmt.Sprintf("read of %s by process %d saw a negative balance %d in account %d: %v", op.Key, op.Process, b, i, op.Balances)}
				}
				sum += b
				in.Balances[i] = b
			}
			if sum != total || len(op.Balances) != bankAccounts {
				return Verdict{Reason: fmt.Sprintf("read of %s by process %d saw total %d, want %d: %v", op.Key, op.Process, sum, total, op.Balances)}
			}
		}
		hist = append(hist, porcupine.Operation{ClientId: op.Process, Input: in, Call: op.Call, Return: op.Return, Metadata: op.Key})
	}
	model := bankModel
	model.Init = func() interface{} {
		var s bankState
		for i := range s {
			s[i] = initial
		}
		return s
	}
	return check(model, hist, dir, timeout)
}

// CheckSet checks a set history against the final contents read after
// healing: every acknowledged add is present, and nothing is present that
// was never attempted or that definitely failed.
func CheckSet(ops []Op, final map[string]bool) Verdict {
	attempted := map[string]string{}
	for _, op := range ops {
		if op.F == "add" {
			attempted[op.Value] = op.Status
		}
	}
	var lost, unexpected []string
	acked := 0
	for v, st := range attempted {
		switch st {
		case StatusOK:
			acked++
			if !final[v] {
				lost = append(lost, v)
			}
		case StatusFail:
			if final[v] {
				unexpected = append(unexpected, v+" (failed)")
			}
		}
	}
	for v := range final {
		if _, ok := attempted[v]; !ok {
			unexpected = append(unexpected, v+" (never added)")
		}
	}
	sort.Strings(lost)
	sort.Strings(unexpected)
	switch {
	case len(lost) > 0:
		return Verdict{Reason: fmt.Sprintf("%d of %d acknowledged adds lost: %s", len(lost), acked, head(lost))}
	case len(unexpected) > 0:
		return Verdict{Reason: fmt.Sprintf("%d unexpected elements: %s", len(unexpected), head(unexpected))}
	}
	return Verdict{Valid: true}
}

// CheckMonotonic checks that successive reads by one process from one
// node never go back in applied index (stale and CZone reads promise
// monotonic reads from a replica).
func CheckMonotonic(ops []Op) Verdict {
	type pn struct {
		p    int
		node string
	}
	last := map[pn]Op{}
	for _, op := range ops {
		if op.F != "read" || op.Status != StatusOK || op.Node == "" {
			continue
		}
		k := pn{op.Process, op.Node}
		if prev, ok := last[k]; ok && op.Index < prev.Index {
			return Verdict{Reason: fmt.Sprintf("process %d read from %s at index %d after index %d: reads went backwards", op.Process, op.Node, op.Index, prev.Index)}
		}
		last[k] = op
	}
	return Verdict{Valid: true}
}

func head(s []string) string {
	if len(s) > 10 {
		return strings.Join(s[:10], ", ") + fmt.Sprintf(" and %d more", len(s)-10)
	}
	return strings.Join(s, ", ")
}

// CheckCDC checks reads served by a CZone copy against the writes made at
// the global group: reads by a process never go back in applied index, and
// each read at applied index I shows exactly what the global group's
// history up to I holds for that key: the acknowledged write with the
// highest version <= I (or a write whose outcome was unknown), never a
// value no write made, never an older one.
func CheckCDC(ops []Op) Verdict {
	if v := CheckMonotonic(ops); !v.Valid {
		return v
	}
	acked := map[string]map[uint64]string{} // key → version → value
	maybe := map[string]map[string]bool{}   // key → values of unknown writes
	for _, op := range ops {
		if op.F != "write" {
			continue
		}
		switch op.Status {
		case StatusOK:
			if acked[op.Key] == nil {
				acked[op.Key] = map[uint64]string{}
			}
			acked[op.Key][op.Version] = op.Value
		case StatusInfo:
			if maybe[op.Key] == nil {
				maybe[op.Key] = map[string]bool{}
			}
			maybe[op.Key][op.Value] = true
		}
	}
	for _, op := range ops {
		if op.F != "read" || op.Status != StatusOK || op.Node == "" {
			continue
		}
		// The newest acknowledged write to the key at or below the index.
		var want uint64
		for v := range acked[op.Key] {
			if v <= op.Index && v > want {
				want = v
			}
		}
		switch {
		case !op.Found && want > 0:
			return Verdict{Reason: fmt.Sprintf("process %d read %s at %s index %d as missing, but write %d <= %d was acknowledged", op.Process, op.Key, op.Node, op.Index, want, op.Index)}
		case !op.Found:
		case op.Version > op.Index:
			return Verdict{Reason: fmt.Sprintf("process %d read %s version %d at %s index %d: a version above the index", op.Process, op.Key, op.Version, op.Node, op.Index)}
		case op.Version < want:
			return Verdict{Reason: fmt.Sprintf("process %d read %s version %d at %s index %d, but write %d <= %d was acknowledged: not a prefix of the history", op.Process, op.Key, op.Version, op.Node, op.Index, want, op.Index)}
		default:
			if v, ok := acked[op.Key][op.Version]; ok && v != op.Value {
				return Verdict{Reason: fmt.Sprintf("process %d read %s = %q at version %d, but that write was %q", op.Process, op.Key, op.Value, op.Version, v)}
			} else if !ok && !maybe[op.Key][op.Value] {
				return Verdict{Reason: fmt.Sprintf("process %d read %s = %q at version %d, a value no write made", op.Process, op.Key, op.Value, op.Version)}
			}
		}
	}
	return Verdict{Valid: true}
}
