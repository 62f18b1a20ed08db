package jepsen

import (
	"os/exec"
	"strings"
	"testing"
	"time"
)

func TestCLI(t *testing.T) {
	c := startCluster(t, 1)
	n := c.Nodes[0]
	waitReplicated(t, newClient(t, n), 1, c.Nodes, 30*time.Second)
	run := func(stdin string, args ...string) (string, error) {
		cmd := exec.Command(bin, args...)
		cmd.Env = append(cmd.Environ(), "LDCD_ENDPOINTS="+n.HTTP)
		cmd.Stdin = strings.NewReader(stdin)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	steps := []struct {
		stdin   string
		args    []string
		want    string
		wantErr bool
	}{
		{"", []string{"kv", "put", "--uid", "42", "balance", "100"}, "version ", false},
		{"", []string{"kv", "get", "--uid", "42", "balance"}, "100\n", false},
		{"", []string{"kv", "put", "--uid", "42", "--cas", "1", "balance", "90"}, "compare failed", true},
		{"from stdin", []string{"kv", "put", "--uid", "42", "note"}, "version ", false},
		{"", []string{"kv", "list", "--uid", "42"}, "note", false},
		{"", []string{"kv", "del", "--uid", "42", "note"}, "deleted", false},
		{"", []string{"kv", "get", "--uid", "42", "note"}, "key not found", true},
		{"", []string{"kv", "get", "--uid", "x1", "k"}, "bad uid", true},
		{"", []string{"kv", "get", "balance"}, "--uid is required", true},
		{"", []string{"kv", "put", "--uid", "1", "k", "v", "--cas", "0"}, "flags go before the arguments", true},
		{"", []string{"global", "put", "rate", "7.1"}, "version ", false},
		{"", []string{"global", "get", "--stale", "rate"}, "7.1", false},
		{"", []string{"status"}, "g-90-99", false},
		{"", []string{"--help"}, "start", false},
	}
	for _, st := range steps {
		out, err := run(st.stdin, st.args...)
		if (err != nil) != st.wantErr || !strings.Contains(out, st.want) {
			t.Errorf("ldcd %s: err=%v output %q, want err=%v and %q", strings.Join(st.args, " "), err, out, st.wantErr, st.want)
		}
	}
	// A bad topology file is refused with a message naming the problem.
	bad := t.TempDir() + "/topo.yaml"
	writeFile(t, bad, "zones:\n  - {name: a, city: x, kind: rzone}\nranges:\n  - {shards: 00-49, owner: a}\n")
	out, err := exec.Command(bin, "start", "--data-dir", t.TempDir(), "--topology", bad).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "shards 50,51") {
		t.Fatalf("bad topology: err=%v output %q", err, out)
	}
	// Timeouts that do not fit together are refused before the node starts.
	for _, bad := range []struct {
		args []string
		want string
	}{
		{[]string{"--leader-heartbeat-timeout", "3s"}, "--leader-heartbeat-timeout 3s: must be from --heartbeat-timeout (1s) to 2.5 times it"},
		{[]string{"--leader-heartbeat-timeout", "500ms"}, "--leader-heartbeat-timeout 500ms: must be from"},
		{[]string{"--state-commit-delay", "-1s"}, "--state-commit-delay -1s: must not be negative"},
	} {
		out, err := exec.Command(bin, append([]string{"start", "--data-dir", t.TempDir()}, bad.args...)...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), bad.want) {
			t.Errorf("start %v: err=%v output %q, want %q", bad.args, err, out, bad.want)
		}
	}
}
