package jepsen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"strconv"
	"time"

	"github.com/ldcd/ldcd/client"
)

// Workloads are the kinds of client load a run can use.
var Workloads = []string{"register", "bank", "set", "cdc"}

// workload drives one kind of client load and checks its history.
type workload interface {
	// setup prepares the data, before any fault.
	setup(ctx context.Context, cl *client.Client) error
	// op performs one random operation and records it.
	op(ctx context.Context, process int, rnd *rand.Rand, cl *client.Client, rec *Recorder)
	// check checks the history after the cluster has healed.
	check(ctx context.Context, ops []Op, cl *client.Client, dir string) Verdict
}

func newWorkload(name string) (workload, error) {
	switch name {
	case "register":
		return &registerWorkload{}, nil
	case "bank":
		return &bankWorkload{initial: 100}, nil
	case "set":
		return &setWorkload{}, nil
	case "cdc":
		return &cdcWorkload{}, nil
	}
	return nil, fmt.Errorf("jepsen: unknown workload %q (want one of %v)", name, Workloads)
}

// opTimeout bounds each client operation; past it, a write's outcome is
// unknown.
const opTimeout = 2 * time.Second

// outcome maps a client error to a history status: nil is ok, a write that
// may have happened is info, anything else certainly did not happen.
func outcome(err error) (string, string) {
	switch {
	case err == nil:
		return StatusOK, ""
	case errors.Is(err, client.ErrIndeterminate):
		return StatusInfo, err.Error()
	case errors.Is(err, client.ErrCASFailed):
		return StatusFail, "compare failed"
	}
	return StatusFail, err.Error()
}

// registerWorkload: reads, writes and compare-and-sets of small integers on
// a few registers spread over every range, checked for linearizability per
// key.
type registerWorkload struct{}

var registerUIDs = []uint64{3, 17, 28, 42, 56, 61, 77, 83, 95, 1234}

func (w *registerWorkload) setup(context.Context, *client.Client) error { return nil }

func (w *registerWorkload) op(ctx context.Context, p int, rnd *rand.Rand, cl *client.Client, rec *Recorder) {
	uid := registerUIDs[rnd.Intn(len(registerUIDs))]
	key := "r"
	op := Op{Process: p, Key: strconv.FormatUint(uid, 10), Call: rec.Now()}
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	switch r := rnd.Intn(10); {
	case r < 4:
		op.F = "read"
		v, err := cl.Get(ctx, uid, key)
		if errors.Is(err, client.ErrNotFound) {
			err = nil
		} else if err == nil {
			op.Value, op.Found = string(v.Data), true
		}
		op.Status, op.Error = outcome(err)
		if op.Status == StatusInfo {
			op.Status = StatusFail // a read changes nothing
		}
	case r < 8:
		op.F = "write"
		op.Value = strconv.Itoa(rnd.Intn(5))
		_, err := cl.Put(ctx, uid, key, []byte(op.Value))
		op.Status, op.Error = outcome(err)
	default:
		op.F = "cas"
		op.Old, op.Value = strconv.Itoa(rnd.Intn(5)), strconv.Itoa(rnd.Intn(5))
		res, err := cl.Txn(ctx, uid, client.TxnRequest{
			Compare: []client.Compare{{Key: key, Target: "value", Value: op.Old}},
			Then:    []client.Op{{Op: "put", Key: key, Value: op.Value}},
		})
		if err == nil && !res.Succeeded {
			err = client.ErrCASFailed
		}
		op.Status, op.Error = outcome(err)
	}
	rec.Add(op)
}

func (w *registerWorkload) check(_ context.Context, ops []Op, _ *client.Client, dir string) Verdict {
	var hist []Op
	for _, op := range ops {
		if op.Process >= 0 {
			hist = append(hist, op)
		}
	}
	return CheckRegister(hist, dir, 2*time.Minute)
}

// bankWorkload: transfers between the five accounts of each of a few users,
// each a transaction conditioned on the versions it read; reads of all five
// balances at once.
type bankWorkload struct{ initial int }

var bankUIDs = []uint64{7, 38, 64, 91}

func acct(i int) string { return "acct-" + strconv.Itoa(i) }

func (w *bankWorkload) setup(ctx context.Context, cl *client.Client) error {
	for _, uid := range bankUIDs {
		req := client.TxnRequest{}
		for i := 0; i < bankAccounts; i++ {
			req.Then = append(req.Then, client.Op{Op: "put", Key: acct(i), Value: strconv.Itoa(w.initial)})
		}
		if _, err := cl.Txn(ctx, uid, req); err != nil {
			return err
		}
	}
	return nil
}

// readAll reads every account of uid in one transaction.
func readAll(ctx context.Context, cl *client.Client, uid uint64) ([]int, []uint64, error) {
	req := client.TxnRequest{}
	for i := 0; i < bankAccounts; i++ {
		req.Then = append(req.Then, client.Op{Op: "get", Key: acct(i)})
	}
	res, err := cl.Txn(ctx, uid, req)
	if err != nil {
		return nil, nil, err
	}
	bal := make([]int, bankAccounts)
	ver := make([]uint64, bankAccounts)
	for i, r := range res.Results {
		if !r.Found {
			return nil, nil, fmt.Errorf("account %d of %d is missing", i, uid)
		}
		bal[i], _ = strconv.Atoi(r.Value)
		ver[i] = r.Version
	}
	return bal, ver, nil
}

func (w *bankWorkload) op(ctx context.Context, p int, rnd *rand.Rand, cl *client.Client, rec *Recorder) {
	uid := bankUIDs[rnd.Intn(len(bankUIDs))]
	op := Op{Process: p, Key: strconv.FormatUint(uid, 10), Call: rec.Now()}
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	if rnd.Intn(2) == 0 {
		// A read is a transaction of gets: linearizable, like a write.
		op.F = "read"
		bal, _, err := readAll(ctx, cl, uid)
		op.Balances = bal
		op.Status, op.Error = outcome(err)
		if op.Status == StatusInfo {
			op.Status = StatusFail
		}
		rec.Add(op)
		return
	}
	op.F = "transfer"
	bal, ver, err := readAll(ctx, cl, uid)
	if err != nil {
		return // nothing attempted
	}
	op.Call = rec.Now()
	op.From = rnd.Intn(bankAccounts)
	op.To = (op.From + 1 + rnd.Intn(bankAccounts-1)) % bankAccounts
	if bal[op.From] == 0 {
		return
	}
	op.Amount = 1 + rnd.Intn(bal[op.From])
	res, err := cl.Txn(ctx, uid, client.TxnRequest{
		Compare: []client.Compare{{Key: acct(op.From), Version: ver[op.From]}, {Key: acct(op.To), Version: ver[op.To]}},
		Then: []client.Op{
			{Op: "put", Key: acct(op.From), Value: strconv.Itoa(bal[op.From] - op.Amount)},
			{Op: "put", Key: acct(op.To), Value: strconv.Itoa(bal[op.To] + op.Amount)},
		},
	})
	if err == nil && !res.Succeeded {
		err = client.ErrCASFailed
	}
	op.Status, op.Error = outcome(err)
	rec.Add(op)
}

func (w *bankWorkload) check(_ context.Context, ops []Op, _ *client.Client, dir string) Verdict {
	var hist []Op
	for _, op := range ops {
		if op.Process >= 0 {
			hist = append(hist, op)
		}
	}
	return CheckBank(hist, w.initial, dir, 2*time.Minute)
}

// setWorkload: unique adds (one key each) over users in every range; after
// healing, every acknowledged add must be present.
type setWorkload struct{}

var setUIDs = []uint64{5, 19, 26, 33, 48, 52, 69, 70, 88, 99}

func (w *setWorkload) setup(context.Context, *client.Client) error { return nil }

func (w *setWorkload) op(ctx context.Context, p int, rnd *rand.Rand, cl *client.Client, rec *Recorder) {
	uid := setUIDs[rnd.Intn(len(setUIDs))]
	elem := fmt.Sprintf("e-%d-%d", p, rnd.Int63())
	op := Op{Process: p, F: "add", Key: strconv.FormatUint(uid, 10), Value: strconv.FormatUint(uid, 10) + "/" + elem, Call: rec.Now()}
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	_, err := cl.Put(ctx, uid, elem, []byte("1"))
	op.Status, op.Error = outcome(err)
	rec.Add(op)
}

func (w *setWorkload) check(ctx context.Context, ops []Op, cl *client.Client, _ string) Verdict {
	final := map[string]bool{}
	for _, uid := range setUIDs {
		after := ""
		for {
			lr, err := listAfter(ctx, cl, uid, after)
			if err != nil {
				return Verdict{Reason: "final read failed: " + err.Error()}
			}
			for _, kv := range lr.KVs {
				final[strconv.FormatUint(uid, 10)+"/"+kv.Key] = true
				after = kv.Key
			}
			if !lr.More {
				break
			}
		}
	}
	return CheckSet(ops, final)
}

// listAfter lists uid's keys after the key after, retrying for up to a
// minute.
func listAfter(ctx context.Context, cl *client.Client, uid uint64, after string) (*client.ListResult, error) {
	var last error
	for i := 0; i < 60; i++ {
		lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		lr, err := cl.ListAfter(lctx, uid, "", after, 10000)
		cancel()
		if err == nil {
			return lr, nil
		}
		last = err
		time.Sleep(time.Second)
	}
	return nil, last
}

// cdcWorkload: writes to global keys at the global group; reads of them
// from a CZone node's copy. Checked by CheckCDC; after healing the copy
// must equal the global group (the runner compares every replica).
type cdcWorkload struct{ czone *Node }

func (w *cdcWorkload) useCluster(c *Cluster) {
	for _, n := range c.Nodes {
		if n.Zone == "cz-sh" {
			w.czone = n
		}
	}
}

func (w *cdcWorkload) setup(context.Context, *client.Client) error {
	if w.czone == nil {
		return errors.New("jepsen: the cdc workload needs a CZone node")
	}
	return nil
}

func (w *cdcWorkload) op(ctx context.Context, p int, rnd *rand.Rand, cl *client.Client, rec *Recorder) {
	key := "g" + strconv.Itoa(rnd.Intn(10))
	op := Op{Process: p, Key: key, Call: rec.Now()}
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	if p%2 == 0 {
		op.F = "write"
		op.Value = fmt.Sprintf("p%d-%d", p, rnd.Int63())
		v, err := cl.GlobalPut(ctx, key, []byte(op.Value))
		op.Version = v
		op.Status, op.Error = outcome(err)
		rec.Add(op)
		return
	}
	op.F, op.Node = "read", w.czone.Name
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+w.czone.HTTP+"/v1/global/"+key+"?max_staleness=1h", nil)
	if err != nil {
		return
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	idx, err := strconv.ParseUint(resp.Header.Get(client.HeaderAppliedIndex), 10, 64)
	if err != nil || (resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusNotFound) {
		return // not served by the copy (e.g. it is down): nothing to check
	}
	op.Index, op.Status = idx, StatusOK
	if resp.StatusCode == http.StatusOK {
		op.Found, op.Value = true, string(body)
		op.Version, _ = strconv.ParseUint(resp.Header.Get(client.HeaderVersion), 10, 64)
	}
	rec.Add(op)
}

func (w *cdcWorkload) check(_ context.Context, ops []Op, _ *client.Client, _ string) Verdict {
	var hist []Op
	for _, op := range ops {
		if op.Process >= 0 {
			hist = append(hist, op)
		}
	}
	return CheckCDC(hist)
}
