package bench

import (
	"bufio"
	"os"
	"os/exec"
	"runtime"
	"strings"
)

// DescribeMachine collects the facts the table names: CPU model, cores,
// Go version, the git revision of root and the load average.
func DescribeMachine(root, etcdVersion, command string) Machine {
	m := Machine{Go: runtime.Version(), Cores: runtime.NumCPU(), Etcd: etcdVersion, Command: command, CPU: "unknown CPU"}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	m.LoadAvg = LoadAvg()
	m.Revision = "unknown revision"
	if out, err := exec.Command("git", "-C", root, "rev-parse", "--short", "HEAD").Output(); err == nil {
		m.Revision = strings.TrimSpace(string(out))
		if st, err := exec.Command("git", "-C", root, "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(strings.TrimSpace(string(st))) > 0 {
			m.Revision += " (with uncommitted changes)"
		}
	}
	return m
}

// LoadAvg is the first three fields of /proc/loadavg.
func LoadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}
