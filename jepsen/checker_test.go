package jepsen

import (
	"math"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The checkers must catch bugs: each gets a history with a known bug, and
// one without.

func TestCheckRegisterCatchesStaleRead(t *testing.T) {
	good := []Op{
		{Process: 0, F: "write", Key: "k", Value: "1", Status: StatusOK, Call: 0, Return: 10},
		{Process: 1, F: "read", Key: "k", Value: "1", Status: StatusOK, Call: 20, Return: 30},
		{Process: 0, F: "cas", Key: "k", Old: "1", Value: "2", Status: StatusOK, Call: 40, Return: 50},
		{Process: 1, F: "cas", Key: "k", Old: "1", Value: "3", Status: StatusFail, Error: "compare failed", Call: 60, Return: 70},
		{Process: 2, F: "write", Key: "k", Value: "9", Status: StatusInfo, Call: 80, Return: math.MaxInt64},
		{Process: 1, F: "read", Key: "k", Value: "2", Status: StatusOK, Call: 90, Return: 100},
	}
	if v := CheckRegister(good, "", 10*time.Second); !v.Valid {
		t.Fatalf("a valid history: %v", v)
	}
	// The read at 20-30 returns the old value after the write completed.
	dir := t.TempDir()
	bad := []Op{
		{Process: 0, F: "write", Key: "k", Value: "1", Status: StatusOK, Call: 0, Return: 10},
		{Process: 0, F: "write", Key: "k", Value: "2", Status: StatusOK, Call: 11, Return: 19},
		{Process: 1, F: "read", Key: "k", Value: "1", Status: StatusOK, Call: 20, Return: 30},
	}
	v := CheckRegister(bad, dir, 10*time.Second)
	if v.Valid || v.Unknown || !strings.HasPrefix(v.String(), "INVALID") {
		t.Fatalf("a stale read: %v", v)
	}
	if v.Visualization != filepath.Join(dir, "linearizability.html") {
		t.Fatalf("no visualization: %q", v.Visualization)
	}
	// An unknown write that a later read observed is fine; one that no
	// read could have observed, read anyway, is not.
	ghost := []Op{
		{Process: 0, F: "read", Key: "k", Value: "7", Status: StatusOK, Call: 0, Return: 10},
	}
	if v := CheckRegister(ghost, "", 10*time.Second); v.Valid {
		t.Fatal("a read of a value never written passed")
	}
}

func TestCheckBank(t *testing.T) {
	read := func(p int, call, ret int64, b ...int) Op {
		return Op{Process: p, F: "read", Key: "u1", Balances: b, Status: StatusOK, Call: call, Return: ret}
	}
	good := []Op{
		read(0, 0, 5, 10, 10, 10, 10, 10),
		{Process: 1, F: "transfer", Key: "u1", From: 0, To: 1, Amount: 4, Status: StatusOK, Call: 6, Return: 9},
		read(0, 10, 15, 6, 14, 10, 10, 10),
		{Process: 1, F: "transfer", Key: "u1", From: 2, To: 3, Amount: 1, Status: StatusInfo, Call: 16, Return: math.MaxInt64},
		read(0, 20, 25, 6, 14, 9, 11, 10),
	}
	if v := CheckBank(good, 10, "", 10*time.Second); !v.Valid {
		t.Fatalf("a valid bank history: %v", v)
	}
	for name, bad := range map[string][]Op{
		"wrong total": {read(0, 0, 5, 10, 10, 10, 10, 11)},
		"negative":    {read(0, 0, 5, -1, 21, 10, 10, 10)},
		"stale read": {
			{Process: 1, F: "transfer", Key: "u1", From: 0, To: 1, Amount: 4, Status: StatusOK, Call: 0, Return: 3},
			read(0, 10, 15, 10, 10, 10, 10, 10),
		},
	} {
		if v := CheckBank(bad, 10, "", 10*time.Second); v.Valid {
			t.Errorf("%s passed", name)
		}
	}
}

func TestCheckSetCatchesLostWrite(t *testing.T) {
	ops := []Op{
		{F: "add", Value: "a", Status: StatusOK},
		{F: "add", Value: "b", Status: StatusInfo},
		{F: "add", Value: "c", Status: StatusFail},
		{F: "add", Value: "d", Status: StatusOK},
	}
	if v := CheckSet(ops, map[string]bool{"a": true, "d": true, "b": true}); !v.Valid {
		t.Fatalf("valid set: %v", v)
	}
	if v := CheckSet(ops, map[string]bool{"a": true}); v.Valid || !strings.Contains(v.Reason, "lost") {
		t.Fatalf("a lost write: %v", v)
	}
	if v := CheckSet(ops, map[string]bool{"a": true, "d": true, "c": true}); v.Valid {
		t.Fatal("a definitely failed add that appeared passed")
	}
	if v := CheckSet(ops, map[string]bool{"a": true, "d": true, "z": true}); v.Valid {
		t.Fatal("an element never added passed")
	}
}

func TestCheckMonotonicCatchesReadGoingBack(t *testing.T) {
	ops := []Op{
		{Process: 0, F: "read", Node: "cz1", Index: 10, Status: StatusOK},
		{Process: 0, F: "read", Node: "cz1", Index: 12, Status: StatusOK},
		{Process: 1, F: "read", Node: "cz1", Index: 5, Status: StatusOK},
	}
	if v := CheckMonotonic(ops); !v.Valid {
		t.Fatalf("monotonic reads: %v", v)
	}
	ops = append(ops, Op{Process: 0, F: "read", Node: "cz1", Index: 11, Status: StatusOK})
	if v := CheckMonotonic(ops); v.Valid || !strings.Contains(v.Reason, "backwards") {
		t.Fatalf("a read going back: %v", v)
	}
}

func TestHistoryJSONL(t *testing.T) {
	r := NewRecorder()
	r.Add(Op{Process: 1, F: "write", Key: "k", Value: "v", Status: StatusOK})
	r.Add(Op{Process: 2, F: "write", Key: "k", Value: "w", Status: StatusInfo})
	path := filepath.Join(t.TempDir(), "history.jsonl")
	if err := WriteJSONL(path, r.Ops()); err != nil {
		t.Fatal(err)
	}
	got, err := ReadJSONL(path)
	if err != nil || len(got) != 2 || got[1].Return != math.MaxInt64 {
		t.Fatalf("round trip: %+v %v", got, err)
	}
}

func TestCheckCDC(t *testing.T) {
	w := func(key, val string, ver uint64, st string) Op {
		return Op{Process: 9, F: "write", Key: key, Value: val, Version: ver, Status: st}
	}
	r := func(p int, key, val string, ver, idx uint64, found bool) Op {
		return Op{Process: p, F: "read", Node: "cz1", Key: key, Value: val, Version: ver, Index: idx, Found: found, Status: StatusOK}
	}
	writes := []Op{w("k", "a", 5, StatusOK), w("k", "b", 9, StatusOK), w("k", "c", 0, StatusInfo)}
	good := append(append([]Op{}, writes...), r(0, "k", "", 0, 3, false), r(0, "k", "a", 5, 7, true), r(0, "k", "b", 9, 12, true), r(1, "k", "c", 15, 20, true))
	if v := CheckCDC(good); !v.Valid {
		t.Fatalf("a valid CZone history: %v", v)
	}
	for name, bad := range map[string]Op{
		"stale: misses write 9 at index 10": r(2, "k", "a", 5, 10, true),
		"missing after write 5":             r(2, "k", "", 0, 6, false),
		"value never written":               r(2, "k", "zz", 11, 12, true),
		"version above the index":           r(2, "k", "b", 9, 8, true),
	} {
		if v := CheckCDC(append(append([]Op{}, writes...), bad)); v.Valid {
			t.Errorf("%s passed", name)
		}
	}
	back := append(append([]Op{}, good...), r(0, "k", "a", 5, 6, true))
	if v := CheckCDC(back); v.Valid || !strings.Contains(v.Reason, "backwards") {
		t.Fatalf("a CZone read going backwards: %v", v)
	}
}
