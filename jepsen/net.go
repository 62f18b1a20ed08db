package jepsen

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"strconv"
	"strings"
)

// Net cuts and heals the network between nodes of a cluster on one machine.
// Every node binds its own loopback address (127.0.0.x) and runs as its own
// system user, so an iptables rule in OUTPUT matching the sender's user and
// the receiver's address drops exactly the traffic from one node to another:
// a partition on loopback, without namespaces. It needs root and iptables.
type Net struct {
	chain string
}

// netChain is the iptables chain the harness owns.
const netChain = "LDCD-JEPSEN"

// ErrNoNet is returned when partitions cannot be made here.
var ErrNoNet = errors.New("jepsen: network faults need root and iptables")

// NetAvailable reports why network faults cannot run, or nil if they can.
func NetAvailable() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("%w (not running as root)", ErrNoNet)
	}
	if _, err := exec.LookPath("iptables"); err != nil {
		return fmt.Errorf("%w (iptables not installed: make jepsen-deps)", ErrNoNet)
	}
	if out, err := exec.Command("iptables", "-w", "-L", "OUTPUT", "-n").CombinedOutput(); err != nil {
		return fmt.Errorf("%w (iptables -L failed: %s)", ErrNoNet, strings.TrimSpace(string(out)))
	}
	return nil
}

func iptables(args ...string) error {
	out, err := exec.Command("iptables", append([]string{"-w"}, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("jepsen: iptables %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// OpenNet creates the harness's chain (removing what an earlier run left).
func OpenNet() (*Net, error) {
	if err := NetAvailable(); err != nil {
		return nil, err
	}
	n := &Net{chain: netChain}
	n.Close()
	if err := iptables("-N", n.chain); err != nil {
		return nil, err
	}
	if err := iptables("-I", "OUTPUT", "-j", n.chain); err != nil {
		iptables("-X", n.chain)
		return nil, err
	}
	return n, nil
}

// Drop drops every packet that from sends to to.
func (n *Net) Drop(from, to *Node) error {
	if from.UID == 0 {
		return fmt.Errorf("jepsen: %s runs as root; it cannot be partitioned", from.Name)
	}
	return iptables("-A", n.chain, "-m", "owner", "--uid-owner", strconv.Itoa(int(from.UID)), "-d", to.IP, "-j", "DROP")
}

// Partition cuts every link between the two sides, both ways.
func (n *Net) Partition(a, b []*Node) error {
	for _, x := range a {
		for _, y := range b {
			if err := n.Drop(x, y); err != nil {
				return err
			}
			if err := n.Drop(y, x); err != nil {
				return err
			}
		}
	}
	return nil
}

// Heal removes every rule.
func (n *Net) Heal() error { return iptables("-F", n.chain) }

// Close removes the chain. It is safe to call more than once.
func (n *Net) Close() {
	for iptables("-D", "OUTPUT", "-j", netChain) == nil {
	}
	iptables("-F", netChain)
	iptables("-X", netChain)
}

// nodeUser returns the uid and gid of the system user for node slot i,
// creating it if needed.
func nodeUser(i int) (uint32, uint32, error) {
	name := fmt.Sprintf("ldcd-jepsen%d", i)
	u, err := user.Lookup(name)
	if err != nil {
		out, err := exec.Command("useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name).CombinedOutput()
		if err != nil {
			return 0, 0, fmt.Errorf("jepsen: useradd %s: %w: %s", name, err, out)
		}
		if u, err = user.Lookup(name); err != nil {
			return 0, 0, err
		}
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return uint32(uid), uint32(gid), nil
}
