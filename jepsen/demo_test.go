package jepsen

import (
	"bufio"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestDemoCommand(t *testing.T) {
	// Find a run of 50 free ports for the demo's five nodes.
	var base int
	for tries := 0; tries < 50 && base == 0; tries++ {
		ports, err := FreePorts(1)
		if err != nil {
			t.Fatal(err)
		}
		b := ports[0]
		ok := b+50 < 65535
		for p := b; ok && p < b+50; p++ {
			l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
			if err != nil {
				ok = false
				break
			}
			l.Close()
		}
		if ok {
			base = b
		}
	}
	if base == 0 {
		t.Skip("no run of 50 free ports")
	}
	cmd := exec.Command(bin, "demo", "--base-port", fmt.Sprint(base), "--dir", t.TempDir())
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	up := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		var all strings.Builder
		for sc.Scan() {
			all.WriteString(sc.Text() + "\n")
			if strings.Contains(sc.Text(), "Ctrl-C stops everything") {
				up <- all.String()
			}
		}
		up <- all.String()
	}()
	var text string
	select {
	case text = <-up:
	case <-time.After(120 * time.Second):
		t.Fatal("demo did not come up in 120s")
	}
	if !strings.Contains(text, "The LDC is up") || !strings.Contains(text, "g-75-99") {
		t.Fatalf("demo output:\n%s", text)
	}
	node := &Node{Name: "rz0a", HTTP: fmt.Sprintf("127.0.0.1:%d", base+10)}
	r := httpDo(t, "PUT", "http://"+node.HTTP+"/v1/kv/42/balance", "100")
	if r.code != 200 {
		t.Fatalf("PUT against the demo: %d %s", r.code, r.body)
	}
	cmd.Process.Signal(syscall.SIGINT)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("demo did not stop within 60s of Ctrl-C")
	}
	for i := 0; i < 5; i++ {
		if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", base+10*i), 200*time.Millisecond); err == nil {
			c.Close()
			t.Errorf("node %d still serves after the demo stopped", i)
		}
	}
}
