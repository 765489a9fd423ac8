package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// sandboxCommand is the hidden subcommand that turns a re-executed agent into one container:
// it runs in its own mount namespace, mounts the volumes, drops to the container's identity and
// execs the container's program (so the container process keeps the sandbox's pid).
const sandboxCommand = "__sandbox"

// sandboxSpec is passed as JSON from the agent to the sandbox.
type sandboxSpec struct {
	Argv         []string // Argv[0] is looked up in the container's PATH
	Env          []string
	Dir          string
	UID, GID     uint32
	Groups       []uint32
	ReadOnlyRoot bool
	Mounts       []bindMount
	ParentPID    int // the agent: the sandbox exits if it is already gone
}

type bindMount struct {
	Source, Target string
	ReadOnly       bool
}

// process is a running container: the leader of its own process group.
type process struct {
	pid      int
	done     chan struct{} // closed when it has exited
	exitCode int32         // 128+signal when killed, as container runtimes report it
}

// startSandbox starts spec's program with stdout and stderr appended to logPath.
func (a *agent) startSandbox(spec sandboxSpec, logPath string) (*process, error) {
	spec.ParentPID = os.Getpid()
	js, err := json.Marshal(spec)
	if err != nil {
		return nil, err
	}
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logFile.Close() // the child has its own copy
	cmd := exec.Command(a.self, sandboxCommand, string(js))
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Env = []string{}
	// CLONE_NEWNS: Go unshares the mount namespace in the child before exec and makes every
	// mount private, so the sandbox's bind mounts never reach the host. Own process group: a
	// stop signals the whole container. Pdeathsig: containers die with a SIGKILLed agent.
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS, Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &process{pid: cmd.Process.Pid, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		ws := cmd.ProcessState.Sys().(syscall.WaitStatus)
		if ws.Signaled() {
			p.exitCode = 128 + int32(ws.Signal())
		} else {
			p.exitCode = int32(ws.ExitStatus())
		}
		// Whatever the container left running in its group goes with it, as with a runtime
		// whose init process exits.
		_ = syscall.Kill(-p.pid, syscall.SIGKILL)
		close(p.done)
	}()
	return p, nil
}

// stop sends SIGTERM to the container's process group, SIGKILL after grace (or as soon as
// abort closes), and waits for the process to exit.
func (p *process) stop(grace time.Duration, abort <-chan struct{}) {
	_ = syscall.Kill(-p.pid, syscall.SIGTERM)
	select {
	case <-p.done:
		return
	case <-time.After(grace):
	case <-abort:
	}
	_ = syscall.Kill(-p.pid, syscall.SIGKILL)
	<-p.done
}

// sandboxMain runs in the re-executed agent. Errors go to the container log; exit code 128
// is reported like a runtime's StartError.
func sandboxMain(args []string) int {
	fail := func(err error) int {
		fmt.Fprintf(os.Stderr, "mimeo-node-agent: cannot start container: %v\n", err)
		return 128
	}
	var s sandboxSpec
	if len(args) != 1 {
		return fail(errors.New("usage: " + sandboxCommand + " SPEC_JSON"))
	}
	if err := json.Unmarshal([]byte(args[0]), &s); err != nil {
		return fail(err)
	}
	// Mount points are created on the host (the root may become read-only below). An existing
	// path is left alone; a missing one stays behind as an empty directory or file.
	for _, m := range s.Mounts {
		if err := makeMountPoint(m); err != nil {
			return fail(err)
		}
	}
	// The program too, when named by an absolute path: an emptyDir mounted at /tmp (as in Mimeo's pods)
	// would otherwise hide a binary under /tmp, e.g. a checkout's target/debug/mimeo. Not
	// close-on-exec, so an interpreter can still read a script through /proc/self/fd.
	program := ""
	if filepath.IsAbs(s.Argv[0]) {
		if fd, err := unix.Open(s.Argv[0], unix.O_PATH, 0); err == nil {
			program = fmt.Sprintf("/proc/self/fd/%d", fd)
		}
	}
	// Sources are opened before anything is mounted: a volume mounted at, say, /tmp would
	// otherwise hide the sources of the next ones when the agent's root is under /tmp.
	sources := make([]string, len(s.Mounts))
	for i, m := range s.Mounts {
		fd, err := unix.Open(m.Source, unix.O_PATH|unix.O_CLOEXEC, 0)
		if err != nil {
			return fail(fmt.Errorf("volume %s: %w", m.Source, err))
		}
		sources[i] = fmt.Sprintf("/proc/self/fd/%d", fd)
	}
	for i, m := range s.Mounts {
		if err := unix.Mount(sources[i], m.Target, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fail(fmt.Errorf("bind %s on %s: %w", m.Source, m.Target, err))
		}
		if m.ReadOnly {
			if err := unix.Mount("", m.Target, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
				return fail(fmt.Errorf("read-only %s: %w", m.Target, err))
			}
		}
	}
	if s.ReadOnlyRoot {
		// A read-only bind of / over itself. Recursive, so /proc, /dev and the volumes just
		// mounted stay visible, each with its own flags: only the root mount becomes
		// read-only. (Volumes bound after this would inherit the read-only flag.)
		if err := unix.Mount("/", "/", "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fail(fmt.Errorf("bind /: %w", err))
		}
		if err := unix.Mount("", "/", "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
			return fail(fmt.Errorf("read-only /: %w", err))
		}
		// Enter the new root mount: without this the process would keep resolving paths
		// from the writable mount underneath.
		if err := unix.Chroot("/"); err != nil {
			return fail(err)
		}
	}
	groups := make([]int, len(s.Groups))
	for i, g := range s.Groups {
		groups[i] = int(g)
	}
	// Go applies these to every thread of the process.
	if err := syscall.Setgroups(groups); err != nil {
		return fail(err)
	}
	if err := syscall.Setgid(int(s.GID)); err != nil {
		return fail(err)
	}
	if err := syscall.Setuid(int(s.UID)); err != nil {
		return fail(err)
	}
	// A change of credentials clears the parent-death signal: set it again, then make sure
	// the agent did not die in between.
	if err := unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(unix.SIGKILL), 0, 0, 0); err != nil {
		return fail(err)
	}
	if os.Getppid() != s.ParentPID {
		return fail(errors.New("the agent is gone"))
	}
	if err := os.Chdir(s.Dir); err != nil {
		return fail(fmt.Errorf("workingDir: %w", err))
	}
	path := program
	if path == "" {
		var err error
		if path, err = lookPath(s.Argv[0], s.Env); err != nil {
			return fail(err)
		}
	}
	return fail(syscall.Exec(path, s.Argv, s.Env))
}

func makeMountPoint(m bindMount) error {
	if _, err := os.Lstat(m.Target); err == nil {
		return nil
	}
	st, err := os.Stat(m.Source)
	if err != nil {
		return err
	}
	if st.IsDir() {
		return os.MkdirAll(m.Target, 0o755)
	}
	return ensureFile(m.Target)
}

// lookPath resolves a command name in the PATH of the container's environment.
func lookPath(name string, env []string) (string, error) {
	if strings.Contains(name, "/") {
		return name, nil
	}
	path := ""
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, "PATH="); ok {
			path = v
		}
	}
	for _, dir := range filepath.SplitList(path) {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%q: executable file not found in $PATH", name)
}
