package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// freePorts returns n distinct free TCP ports on 127.0.0.1 (free when
// asked: another process may take one before it is used).
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// portFree reports whether port is free for TCP and UDP on 127.0.0.1.
func portFree(port int) bool {
	a := "127.0.0.1:" + strconv.Itoa(port)
	l, err := net.Listen("tcp", a)
	if err != nil {
		return false
	}
	l.Close()
	u, err := net.ListenPacket("udp", a)
	if err != nil {
		return false
	}
	u.Close()
	return true
}

// stopProcess sends SIGTERM to cmd's process group, waits up to grace and
// then kills the group. It is a no-op for a process that already exited.
func stopProcess(cmd *exec.Cmd, done <-chan struct{}, grace time.Duration) {
	if cmd == nil || cmd.Process == nil {
		return
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(grace):
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
}

// Etcd is a 3-member etcd cluster on loopback started by StartEtcd.
type Etcd struct {
	Endpoints []string
	Version   string
	dir       string
	cmds      []*exec.Cmd
	done      []chan struct{}
}

// StartEtcd starts three etcd members (bin, default durability: every
// commit is fsynced) with data dirs under dir and waits until the
// cluster answers a linearizable read. Logs go to dir/eN.log.
func StartEtcd(ctx context.Context, bin, dir string) (*Etcd, error) {
	ports, err := freePorts(6)
	if err != nil {
		return nil, err
	}
	e := &Etcd{dir: dir}
	var initial []string
	for i := range 3 {
		initial = append(initial, fmt.Sprintf("e%d=http://127.0.0.1:%d", i, ports[3+i]))
	}
	for i := range 3 {
		client := fmt.Sprintf("http://127.0.0.1:%d", ports[i])
		peer := fmt.Sprintf("http://127.0.0.1:%d", ports[3+i])
		logf, err := os.Create(filepath.Join(dir, fmt.Sprintf("e%d.log", i)))
		if err != nil {
			e.Stop()
			return nil, err
		}
		cmd := exec.Command(bin,
			"--name", fmt.Sprintf("e%d", i), "--data-dir", filepath.Join(dir, fmt.Sprintf("e%d", i)),
			"--listen-client-urls", client, "--advertise-client-urls", client,
			"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
			"--initial-cluster", strings.Join(initial, ","), "--initial-cluster-state", "new",
			"--initial-cluster-token", "verbund-bench", "--max-txn-ops", "1000", "--logger", "zap", "--log-level", "warn")
		cmd.Stdout, cmd.Stderr = logf, logf
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			logf.Close()
			e.Stop()
			return nil, fmt.Errorf("start etcd: %w", err)
		}
		d := make(chan struct{})
		go func() { _ = cmd.Wait(); logf.Close(); close(d) }()
		e.cmds, e.done = append(e.cmds, cmd), append(e.done, d)
		e.Endpoints = append(e.Endpoints, client)
	}
	c, err := e.Client()
	if err != nil {
		e.Stop()
		return nil, err
	}
	defer c.Close()
	deadline := time.Now().Add(30 * time.Second)
	for {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err = c.Get(cctx, "bench-ready")
		var st *clientv3.StatusResponse
		if err == nil {
			st, err = c.Status(cctx, e.Endpoints[0])
		}
		cancel()
		if err == nil {
			e.Version = st.Version
			return e, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			e.Stop()
			return nil, fmt.Errorf("etcd did not become ready within 30 s (logs in %s): %w", dir, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// PIDs are the members' process ids.
func (e *Etcd) PIDs() []int {
	var out []int
	for _, c := range e.cmds {
		out = append(out, c.Process.Pid)
	}
	return out
}

// Client returns a client of all members (the caller closes it).
func (e *Etcd) Client(eps ...string) (*clientv3.Client, error) {
	if len(eps) == 0 {
		eps = e.Endpoints
	}
	return clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
}

// Stop stops every member (SIGTERM, SIGKILL after 10 s).
func (e *Etcd) Stop() {
	for i, c := range e.cmds {
		stopProcess(c, e.done[i], 10*time.Second)
	}
	e.cmds = nil
}

// Verbund is the local network of scripts/cluster.sh (3 voters, 2
// members, mutual TLS between nodes, default durability) started by
// StartVerbund.
type Verbund struct {
	Dir   string
	API   []string // public API of n1..n5
	Admin []string // admin listener of n1..n5 (pprof, /metrics)
	Bin   string
	root  string
	off   int
	env   []string
	cmd   *exec.Cmd
	done  chan struct{}
}

// clusterPorts are the ports of scripts/cluster.sh's table, before the
// offset.
var clusterPorts = []int{18081, 18082, 18083, 18084, 18085, 18091, 18092, 18093, 18094, 18095, 17001, 17002, 17003,
	17101, 17102, 17103, 17104, 17105, 17201, 17202, 17203, 17204, 17205}

// StartVerbund runs scripts/cluster.sh (in root, the checkout) with its
// data under dir, the node flags nodeFlags (e.g. "--rate-limits off") and
// a port offset at which every port of the script's table is free; it
// returns once the script reports the network running (governance steps
// done). progress receives the script's output.
func StartVerbund(ctx context.Context, root, bin, dir, nodeFlags string, progress io.Writer, env ...string) (*Verbund, error) {
	off := -1
	for try := range 200 {
		o := 1000 * (3 + (int(time.Now().UnixNano()/1000)+try)%40)
		ok := true
		for _, p := range clusterPorts {
			if !portFree(p + o) {
				ok = false
				break
			}
		}
		if ok {
			off = o
			break
		}
	}
	if off < 0 {
		return nil, errors.New("no port offset with every port of scripts/cluster.sh free")
	}
	v := &Verbund{Dir: dir, Bin: bin, root: root, off: off, done: make(chan struct{})}
	v.env = append(os.Environ(), "CLUSTER_DIR="+dir, "PORT_OFFSET="+strconv.Itoa(off), "NODE_FLAGS="+nodeFlags, "BIN="+bin)
	v.env = append(v.env, env...)
	for i := range 5 {
		v.API = append(v.API, fmt.Sprintf("http://127.0.0.1:%d", 18081+i+off))
		v.Admin = append(v.Admin, fmt.Sprintf("http://127.0.0.1:%d", 18091+i+off))
	}
	if err := v.start(ctx, progress); err != nil {
		return nil, err
	}
	return v, nil
}

// AddNodes runs scripts/cluster.sh once more for the nodes ids (e.g. "n4")
// of the same network (its data dir, ports and flags, env on top) and
// returns once it reports them running; Stop stops them too.
func (v *Verbund) AddNodes(ctx context.Context, ids string, progress io.Writer, env ...string) (*Verbund, error) {
	w := &Verbund{Dir: v.Dir, API: v.API, Admin: v.Admin, Bin: v.Bin, root: v.root, off: v.off, done: make(chan struct{})}
	w.env = append(append(slices.Clone(v.env), env...), "NODES_ONLY="+ids)
	if err := w.start(ctx, progress); err != nil {
		return nil, err
	}
	return w, nil
}

// start runs scripts/cluster.sh with v's environment and waits until it
// reports the network running.
func (v *Verbund) start(ctx context.Context, progress io.Writer) error {
	dir, root := v.Dir, v.root
	pr, pw := io.Pipe()
	v.cmd = exec.Command(filepath.Join(root, "scripts", "cluster.sh"))
	v.cmd.Dir, v.cmd.Env = root, v.env
	v.cmd.Stdout, v.cmd.Stderr = pw, pw
	v.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := v.cmd.Start(); err != nil {
		return fmt.Errorf("start scripts/cluster.sh: %w", err)
	}
	exited := make(chan error, 1)
	go func() { err := v.cmd.Wait(); pw.Close(); exited <- err; close(v.done) }()
	ready := make(chan struct{})
	go func() {
		buf := make([]byte, 4096)
		var seen strings.Builder
		signalled := false
		for {
			n, err := pr.Read(buf)
			if n > 0 {
				if progress != nil {
					_, _ = progress.Write(buf[:n])
				}
				if !signalled {
					seen.Write(buf[:n])
					if strings.Contains(seen.String(), "Verbund local network is running") {
						signalled = true
						close(ready)
					}
				}
			}
			if err != nil {
				return
			}
		}
	}()
	select {
	case <-ready:
		return nil
	case err := <-exited:
		v.Stop()
		return fmt.Errorf("scripts/cluster.sh exited before the network ran (%v); logs in %s", err, dir)
	case <-time.After(4 * time.Minute):
		v.Stop()
		return fmt.Errorf("scripts/cluster.sh: no running network within 4 minutes; logs in %s", dir)
	case <-ctx.Done():
		v.Stop()
		return ctx.Err()
	}
}

// PIDs are the nodes' process ids (from the script's PID files).
func (v *Verbund) PIDs() []int {
	var out []int
	for i := 1; i <= 5; i++ {
		b, err := os.ReadFile(filepath.Join(v.Dir, fmt.Sprintf("n%d.pid", i)))
		if err != nil {
			continue
		}
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			out = append(out, pid)
		}
	}
	return out
}

// Stop stops every node (scripts/cluster.sh stop, by PID files) and the
// script.
func (v *Verbund) Stop() {
	stop := exec.Command(filepath.Join(v.root, "scripts", "cluster.sh"), "stop")
	stop.Dir, stop.Env = v.root, v.env
	_ = stop.Run()
	stopProcess(v.cmd, v.done, 45*time.Second)
}

// profile starts CPU profiles of the named nodes (admin listener base
// URLs) for the row tagged tag, if cfg.ProfileDir is set; the returned
// func waits for them and logs what failed. A profile lasts the row's
// duration less a second (at least one second), from the row's start.
func (cfg *Config) profile(ctx context.Context, tag string, admins map[string]string) (wait func()) {
	if cfg.ProfileDir == "" {
		return func() {}
	}
	secs := max(1, int(cfg.Duration/time.Second)-1)
	var wg sync.WaitGroup
	for name, base := range admins {
		wg.Go(func() {
			path := filepath.Join(cfg.ProfileDir, tag+"-"+name+".pprof")
			if err := fetchProfile(ctx, fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", base, secs), path); err != nil {
				cfg.logf("profile %s of the %s: %v", tag, name, err)
			}
		})
	}
	return wg.Wait
}

// fetchProfile saves what url (a pprof endpoint) answers to path.
func fetchProfile(ctx context.Context, url, path string) error {
	b, err := adminGet(ctx, url)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

// adminGet reads url from a node's admin listener (plain HTTP on
// loopback); any status but 200 is an error.
func adminGet(ctx context.Context, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", url, res.Status)
	}
	return io.ReadAll(res.Body)
}
