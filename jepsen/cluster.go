package jepsen

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// buildFlags are extra flags for go build (tests add -race when they run
// with the race detector, so the processes are checked too).
var buildFlags []string

// Build compiles ldcd from the module that contains this package into dir
// and returns the binary's path. extra are more flags for go build (e.g.
// "-tags", "failpoints").
func Build(dir string, extra ...string) (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("jepsen: go env GOMOD: %w", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(out)))
	bin := filepath.Join(dir, "ldcd")
	args := append(append(append([]string{"build"}, buildFlags...), extra...), "-o", bin, "./cmd/ldcd")
	cmd := exec.Command("go", args...)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("jepsen: go build: %w\n%s", err, b)
	}
	return bin, nil
}

// FreePorts returns n TCP ports that were free a moment ago on 127.0.0.1
// (for gossip, the UDP port of the same number is also checked).
func FreePorts(n int) ([]int, error) { return freePortsAt("127.0.0.1", n) }

func freePortsAt(ip string, n int) ([]int, error) {
	var ports []int
	var lns []net.Listener
	defer func() {
		for _, l := range lns {
			l.Close()
		}
	}()
	for len(ports) < n {
		l, err := net.Listen("tcp", ip+":0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, l)
		p := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", fmt.Sprintf("%s:%d", ip, p))
		if err != nil {
			continue
		}
		u.Close()
		ports = append(ports, p)
	}
	return ports, nil
}

// Node is one ldcd process of a cluster.
type Node struct {
	Name, Zone, City   string
	HTTP, Raft, Gossip string
	DataDir, LogPath   string
	// Args are extra flags for ldcd start.
	Args []string
	// IP is the loopback address the node binds (127.0.0.1 by default).
	IP string
	// UID and GID, when not zero, run the process as that user, so that
	// firewall rules can match its traffic (partitions).
	UID, GID uint32

	mu   sync.Mutex // guards cmd and done
	cmd  *exec.Cmd
	done chan struct{}
}

// PID returns the node's process id (0 if not started).
func (n *Node) PID() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil || n.cmd.Process == nil {
		return 0
	}
	return n.cmd.Process.Pid
}

// Running reports whether the node's process is alive.
func (n *Node) Running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return false
	}
	select {
	case <-n.done:
		return false
	default:
		return true
	}
}

// Cluster runs ldcd processes in a directory of its own.
type Cluster struct {
	Bin   string
	Dir   string
	Nodes []*Node
	// Args are flags given to every node.
	Args []string
	// Env holds more environment variables of every node's process
	// ("KEY=value"; LDCD_FAILPOINTS in a failpoint build).
	Env []string

	portsMu sync.Mutex      // guards ports
	ports   map[string]bool // ip:port handed to a node of this cluster
}

// NewNode adds a node named name (not started) with fresh ports on
// 127.0.0.1.
func (c *Cluster) NewNode(name, zone, city string) (*Node, error) {
	return c.NewNodeAt(name, zone, city, "127.0.0.1")
}

// NewNodeAt adds a node that binds the loopback address ip.
func (c *Cluster) NewNodeAt(name, zone, city, ip string) (*Node, error) {
	ports, err := c.freshPorts(ip, 3)
	if err != nil {
		return nil, err
	}
	n := &Node{
		Name: name, Zone: zone, City: city, IP: ip,
		HTTP:    fmt.Sprintf("%s:%d", ip, ports[0]),
		Raft:    fmt.Sprintf("%s:%d", ip, ports[1]),
		Gossip:  fmt.Sprintf("%s:%d", ip, ports[2]),
		DataDir: filepath.Join(c.Dir, name),
		LogPath: filepath.Join(c.Dir, name+".log"),
	}
	c.Nodes = append(c.Nodes, n)
	return n, nil
}

// freshPorts returns n free ports on ip that no node of c was given: a port
// that was free a moment ago may be offered again before its node binds it.
func (c *Cluster) freshPorts(ip string, n int) ([]int, error) {
	c.portsMu.Lock()
	defer c.portsMu.Unlock()
	if c.ports == nil {
		c.ports = map[string]bool{}
	}
	var out []int
	for len(out) < n {
		ps, err := freePortsAt(ip, n-len(out))
		if err != nil {
			return nil, err
		}
		for _, p := range ps {
			key := fmt.Sprintf("%s:%d", ip, p)
			if !c.ports[key] && !slices.Contains(out, p) {
				c.ports[key] = true
				out = append(out, p)
			}
		}
	}
	return out, nil
}

// StartNodes adds and starts n nodes named n1…nN in one zone, each joining
// through the first.
func (c *Cluster) StartNodes(n int, zone, city string) error {
	for i := 1; i <= n; i++ {
		node, err := c.NewNode(fmt.Sprintf("n%d", i), zone, city)
		if err != nil {
			return err
		}
		var join []string
		if i > 1 {
			join = []string{c.Nodes[0].Gossip}
		}
		if err := c.Start(node, join...); err != nil {
			return err
		}
	}
	return nil
}

// Start starts n, joining through join (gossip addresses; none for the
// first node).
func (c *Cluster) Start(n *Node, join ...string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd != nil {
		select {
		case <-n.done:
		default:
			return fmt.Errorf("jepsen: %s is already running", n.Name)
		}
	}
	args := []string{"start",
		"--name", n.Name, "--data-dir", n.DataDir, "--zone", n.Zone, "--city", n.City,
		"--http-addr", n.HTTP, "--raft-addr", n.Raft, "--gossip-addr", n.Gossip,
	}
	for _, j := range join {
		args = append(args, "--join", j)
	}
	args = append(append(args, c.Args...), n.Args...)
	logf, err := os.OpenFile(n.LogPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	fmt.Fprintf(logf, "=== %s starting: %s %s\n", time.Now().Format(time.RFC3339Nano), c.Bin, strings.Join(args, " "))
	cmd := exec.Command(c.Bin, args...)
	if len(c.Env) > 0 {
		cmd.Env = append(os.Environ(), c.Env...)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if n.UID != 0 {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: n.UID, Gid: n.GID}
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("jepsen: start %s: %w", n.Name, err)
	}
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		logf.Close()
		close(done)
	}()
	n.cmd, n.done = cmd, done
	return nil
}

// Pause stops n with SIGSTOP; Resume continues it.
func (c *Cluster) Pause(n *Node) { c.sendOnly(n, syscall.SIGSTOP) }

// Resume continues a paused node.
func (c *Cluster) Resume(n *Node) { c.sendOnly(n, syscall.SIGCONT) }

func (c *Cluster) sendOnly(n *Node, sig syscall.Signal) {
	n.mu.Lock()
	cmd := n.cmd
	n.mu.Unlock()
	if cmd != nil && cmd.Process != nil {
		cmd.Process.Signal(sig)
	}
}

// Kill sends SIGKILL to n and waits for it to exit.
func (c *Cluster) Kill(n *Node) { c.signal(n, syscall.SIGKILL, 0) }

// Stop sends SIGTERM to n and waits up to 10s, then kills it.
func (c *Cluster) Stop(n *Node) { c.signal(n, syscall.SIGTERM, 10*time.Second) }

func (c *Cluster) signal(n *Node, sig syscall.Signal, grace time.Duration) {
	n.mu.Lock()
	cmd, done := n.cmd, n.done
	n.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGCONT) // a paused process must run to die
	cmd.Process.Signal(sig)
	if grace > 0 {
		select {
		case <-done:
			return
		case <-time.After(grace):
			cmd.Process.Kill()
		}
	}
	<-done
}

// Close kills every node.
func (c *Cluster) Close() {
	for _, n := range c.Nodes {
		c.Kill(n)
	}
}

// GetJSON fetches path from n's HTTP API into out.
func GetJSON(ctx context.Context, n *Node, path string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+n.HTTP+path, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("jepsen: %s%s: status %d", n.Name, path, resp.StatusCode)
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// Digest is one replica's fingerprint, as GET /v1/internal/digest gives it.
type Digest struct {
	ID           string `json:"id"`
	AppliedIndex uint64 `json:"applied_index"`
	SHA256       string `json:"sha256"`
}

// Digests returns the fingerprints of every replica on every running node,
// by group and then node.
func (c *Cluster) Digests(ctx context.Context) (map[string]map[string]Digest, error) {
	out := map[string]map[string]Digest{}
	for _, n := range c.Nodes {
		if !n.Running() {
			continue
		}
		var body struct {
			Groups []Digest `json:"groups"`
		}
		if err := GetJSON(ctx, n, "/v1/internal/digest", &body); err != nil {
			return nil, err
		}
		for _, d := range body.Groups {
			if out[d.ID] == nil {
				out[d.ID] = map[string]Digest{}
			}
			out[d.ID][n.Name] = d
		}
	}
	return out, nil
}

// ErrReplicasDiffer is returned by CompareReplicas when replicas at the
// same applied index hold different data.
var ErrReplicasDiffer = errors.New("jepsen: replicas differ")

// CompareReplicas waits (until ctx ends) for all running replicas of each
// group to reach the same applied index, then checks that their contents
// are identical. It returns how many replicas of each group it compared.
func (c *Cluster) CompareReplicas(ctx context.Context) (map[string]int, error) {
	for {
		ds, err := c.Digests(ctx)
		if err == nil {
			settled := true
			counts := map[string]int{}
			for gid, byNode := range ds {
				var first *Digest
				for _, d := range byNode {
					if first == nil {
						first = &d
						continue
					}
					if d.AppliedIndex != first.AppliedIndex {
						settled = false
						break
					}
					if d.SHA256 != first.SHA256 {
						return nil, fmt.Errorf("%w: group %s at index %d: %v", ErrReplicasDiffer, gid, d.AppliedIndex, byNode)
					}
				}
				counts[gid] = len(byNode)
			}
			if settled {
				return counts, nil
			}
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("jepsen: replicas did not reach the same index: %w (last error %v)", ctx.Err(), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
