package bench

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/ldcd/ldcd/client"
)

// LDCD drives an ldcd cluster through the Go client.
type LDCD struct{ C *client.Client }

// Put implements Target.
func (l LDCD) Put(ctx context.Context, uid uint64, key string, value []byte) error {
	_, err := l.C.Put(ctx, uid, key, value)
	return err
}

// Get implements Target. A key that does not exist is not an error.
func (l LDCD) Get(ctx context.Context, uid uint64, key string, stale bool) error {
	var err error
	if stale {
		_, err = l.C.Get(ctx, uid, key, client.Stale())
	} else {
		_, err = l.C.Get(ctx, uid, key)
	}
	if errors.Is(err, client.ErrNotFound) {
		return nil
	}
	return err
}

// Txn implements Target: one transaction that puts value under every key.
func (l LDCD) Txn(ctx context.Context, uid uint64, keys []string, value []byte) error {
	var req client.TxnRequest
	for _, k := range keys {
		req.Then = append(req.Then, client.Op{Op: "put", Key: k, Value: string(value)})
	}
	_, err := l.C.Txn(ctx, uid, req)
	return err
}

// Meter reads the costs of the cluster l talks to from its nodes' /metrics:
// the nodes are those GET /v1/cluster lists, except nodes that have left,
// and the entries are the groups' applied indexes (ldcd_group_applied_index,
// the highest any node reports for each group). hc reads the metrics.
func (l LDCD) Meter(hc *http.Client) Meter {
	return &MetricsMeter{
		Applied: "ldcd_group_applied_index",
		HTTP:    hc,
		URLs: func(ctx context.Context) ([]string, error) {
			info, err := l.C.Cluster(ctx)
			if err != nil {
				return nil, fmt.Errorf("bench: listing the nodes to read costs from: %w", err)
			}
			var urls []string
			for _, n := range info.Nodes {
				if n.Status != "left" && n.HTTPAddr != "" {
					urls = append(urls, "http://"+n.HTTPAddr+"/metrics")
				}
			}
			return urls, nil
		},
	}
}
