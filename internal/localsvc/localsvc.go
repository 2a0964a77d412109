// Package localsvc starts the real services freshet runs beside itself on
// one machine, for the demo (`make run`) and for the tests: influxd on a
// free loopback port, child processes with their logs, and polling with a
// deadline. It does not import testing; internal/testsvc wraps it for tests.
package localsvc

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Poll is WaitFor without a testing.TB: it returns cond's last error on timeout.
func Poll(timeout time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	wait := time.Millisecond
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %v: %w", timeout, err)
		}
		time.Sleep(wait)
		wait = min(2*wait, 100*time.Millisecond)
	}
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// RepoRoot returns the root of the freshet module, found by walking up from
// the working directory (go test runs in the package's directory).
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.Contains(b, []byte("module github.com/freshet-iot/freshet\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no freshet go.mod above the working directory")
		}
		dir = parent
	}
}

// ToolPath finds a tool built by `make tools` (.tools/bin under the repo
// root), or the path in env if that is set.
func ToolPath(name, env string) (string, error) {
	if p := os.Getenv(env); p != "" {
		return p, nil
	}
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	p := filepath.Join(root, ".tools", "bin", name)
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("%s not built (run `make tools`, or set %s): %w", name, env, err)
	}
	return p, nil
}

// Proc is a child process with its output in a log file.
type Proc struct {
	Name    string
	Path    string
	Args    []string
	LogPath string
	cmd     *exec.Cmd
	done    chan struct{}
	waitErr error
}

// Start starts the process.
func (p *Proc) Start() error {
	logf, err := os.OpenFile(p.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(p.Path, p.Args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Die with the test binary, whatever kills it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s: %w", p.Name, err)
	}
	p.cmd, p.done = cmd, make(chan struct{})
	go func() {
		p.waitErr = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	return nil
}

// Running reports whether it runs.
func (p *Proc) Running() bool {
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Stop sends SIGTERM, then SIGKILL after grace; it returns once the process is gone.
func (p *Proc) Stop(grace time.Duration) {
	if !p.Running() {
		return
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		p.Kill()
	}
}

// Kill sends SIGKILL (kill -9) and returns once the process is gone.
func (p *Proc) Kill() {
	if !p.Running() {
		return
	}
	p.cmd.Process.Kill()
	<-p.done
}

// Tail returns the last n lines of the process log.
func (p *Proc) Tail(n int) string {
	f, err := os.Open(p.LogPath)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	var lines []string
	s := bufio.NewScanner(f)
	s.Buffer(nil, 1<<20)
	for s.Scan() {
		lines = append(lines, s.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}

// WaitTCP waits until addr accepts connections, or p exits.
func WaitTCP(p *Proc, addr string, timeout time.Duration) error {
	return Poll(timeout, func() error {
		if p != nil && !p.Running() {
			return fmt.Errorf("%s exited (%v); log:\n%s", p.Name, p.waitErr, p.Tail(20))
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return err
		}
		return c.Close()
	})
}

// ExitErr returns how the process ended (nil while it runs).
func (p *Proc) ExitErr() error {
	if p.Running() {
		return nil
	}
	return p.waitErr
}
