// Package client is the Go client of ldcd.
//
//	c, err := client.New(client.Config{Endpoints: []string{"127.0.0.1:7070"}})
//	v, err := c.Put(ctx, 42, "balance", []byte("100"))
//	_, err = c.CompareAndSwap(ctx, 42, "balance", []byte("90"), v)
//	if errors.Is(err, client.ErrCASFailed) { ... }
//	got, err := c.Get(ctx, 42, "balance")
//
// The client keeps a routing cache (shard → group → leader) filled from
// /v1/cluster and from the X-Ldc-Leader-Http header of answers, so requests
// go straight to the leader of the user's group. It retries reads, and
// writes that definitely did not happen (the node could not be reached, no
// leader yet). A write whose outcome is unknown returns ErrIndeterminate and
// is never retried: the caller decides.
//
// The package also holds the JSON types of the HTTP API (wire.go); the
// server uses the same types. It imports only the shard map of package
// placement, never server code.
package client
