package main

import (
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/kubernetes/third_party/forked/golang/expansion"
	"k8s.io/utils/ptr"
)

// Restart backoff: shorter than the kubelet's (10 s to 5 min) to keep tests quick.
const (
	initialBackoff = time.Second
	maxBackoff     = time.Minute
	// A container that ran this long restarts with the initial backoff again.
	backoffReset = 10 * time.Minute
)

// runContainer runs c, restarting it as the restart policy says, until it is done or the pod
// stops. It returns the last exit code.
func (w *podWorker) runContainer(c *container) int32 {
	backoff := initialBackoff
	for {
		code, ran := w.runOnce(c)
		if w.isStopped() || !w.restarts(c, code) {
			return code
		}
		if ran > backoffReset {
			backoff = initialBackoff
		}
		w.setWaiting(c, "CrashLoopBackOff", fmt.Sprintf("back-off %s restarting failed container %s", backoff, c.spec.Name))
		select {
		case <-w.stopped:
			return code
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, maxBackoff)
		w.mu.Lock()
		c.status.RestartCount++
		w.mu.Unlock()
	}
}

// runOnce starts c's process and waits for it to exit (or stops it when the pod stops).
func (w *podWorker) runOnce(c *container) (code int32, ran time.Duration) {
	var spec sandboxSpec
	for {
		var err error
		if spec, err = w.sandboxSpec(c); err == nil {
			break
		}
		// Like the kubelet: a missing Secret or ConfigMap key is waited for.
		w.setWaiting(c, "CreateContainerConfigError", err.Error())
		select {
		case <-w.stopped:
			return 0, 0
		case <-time.After(2 * time.Second):
		}
	}
	pod := w.snapshot()
	start := metav1.Now()
	p, err := w.a.startSandbox(spec, w.a.logPath(pod, c.spec.Name))
	if err != nil {
		w.setTerminated(c, 128, "StartError", err.Error(), start, "")
		return 128, 0
	}
	containerID := fmt.Sprintf("mimeo://%d", p.pid)
	w.mu.Lock()
	if t := c.status.State.Terminated; t != nil {
		c.status.LastTerminationState = v1.ContainerState{Terminated: t}
	}
	c.status.State = v1.ContainerState{Running: &v1.ContainerStateRunning{StartedAt: start}}
	c.status.ContainerID, c.status.Ready, c.status.Started = containerID, false, ptr.To(false)
	w.mu.Unlock()
	w.markDirty()
	logf("pod %s container %s started: pid %d, %q", w.key, c.spec.Name, p.pid, spec.Argv)

	probesDone := make(chan struct{})
	w.startProbes(c, p, probesDone)
	select {
	case <-p.done:
	case <-w.stopped:
		p.stop(w.stopGrace(), w.killed)
	}
	close(probesDone)
	reason := "Completed"
	if p.exitCode != 0 {
		reason = "Error"
	}
	w.setTerminated(c, p.exitCode, reason, "", start, containerID)
	logf("pod %s container %s exited %d", w.key, c.spec.Name, p.exitCode)
	return p.exitCode, time.Since(start.Time)
}

func (w *podWorker) setTerminated(c *container, code int32, reason, msg string, start metav1.Time, id string) {
	w.mu.Lock()
	c.status.State = v1.ContainerState{Terminated: &v1.ContainerStateTerminated{ExitCode: code, Reason: reason,
		Message: msg, StartedAt: start, FinishedAt: metav1.Now(), ContainerID: id}}
	c.status.Ready, c.status.Started = false, ptr.To(false)
	w.mu.Unlock()
	w.markDirty()
}

// sandboxSpec resolves everything c's process needs: program, environment, identity, mounts.
func (w *podWorker) sandboxSpec(c *container) (sandboxSpec, error) {
	pod := w.snapshot()
	env, vars, err := w.containerEnv(pod, &c.spec, c.id.uid)
	if err != nil {
		return sandboxSpec{}, err
	}
	argv, err := w.a.argv(&c.spec, vars)
	if err != nil {
		return sandboxSpec{}, err
	}
	w.mu.Lock()
	c.env = env
	vols := w.volumes
	w.mu.Unlock()
	var mounts []bindMount
	for _, vm := range c.spec.VolumeMounts {
		vol, ok := vols[vm.Name]
		if !ok {
			return sandboxSpec{}, fmt.Errorf("volume %q is not set up", vm.Name)
		}
		source := vol.path
		subPath := vm.SubPath
		if vm.SubPathExpr != "" {
			subPath = expansion.Expand(vm.SubPathExpr, expansion.MappingFuncFor(vars))
		}
		if subPath != "" {
			source = filepath.Join(source, subPath)
			if err := ensureSubPath(source); err != nil {
				return sandboxSpec{}, err
			}
		}
		mounts = append(mounts, bindMount{Source: source, Target: filepath.Clean(vm.MountPath),
			ReadOnly: vm.ReadOnly || vol.readOnly})
	}
	// Parents before children: /a must be mounted before /a/b.
	sort.SliceStable(mounts, func(i, j int) bool { return len(mounts[i].Target) < len(mounts[j].Target) })
	dir := c.spec.WorkingDir
	if dir == "" {
		dir = "/"
	}
	sc := c.spec.SecurityContext
	return sandboxSpec{Argv: argv, Env: env, Dir: dir, UID: c.id.uid, GID: c.id.gid, Groups: c.id.groups,
		ReadOnlyRoot: sc != nil && ptr.Deref(sc.ReadOnlyRootFilesystem, false), Mounts: mounts}, nil
}

// argv is the process's argument vector: command and args with $(VAR) expanded, where an
// image mapped by --image-binary runs the mapped executable instead of its entrypoint.
func (a *agent) argv(c *v1.Container, vars map[string]string) ([]string, error) {
	expand := func(in []string) []string {
		out := make([]string, len(in))
		for i, s := range in {
			out[i] = expansion.Expand(s, expansion.MappingFuncFor(vars))
		}
		return out
	}
	cmd, args := expand(c.Command), expand(c.Args)
	for _, b := range a.binaries {
		if !strings.Contains(c.Image, b.match) {
			continue
		}
		if len(cmd) == 0 {
			return append([]string{b.path}, args...), nil
		}
		// The image's entrypoint (e.g. /usr/local/bin/mimeo) is the mapped binary; any other
		// command (e.g. /bin/sh) runs from the host.
		if base := filepath.Base(cmd[0]); base == filepath.Base(b.path) || base == b.match {
			cmd[0] = b.path
		}
		return append(cmd, args...), nil
	}
	if len(cmd) == 0 {
		return nil, fmt.Errorf("image %q has no local binary (--image-binary) and the container has no command", c.Image)
	}
	return append(cmd, args...), nil
}

// identity is the user, group and supplementary groups a container process runs as.
type identity struct {
	uid, gid uint32
	groups   []uint32
}

// containerIdentity applies the pod's and the container's securityContext. Without an image
// there is no image user: unset runAsUser and runAsGroup mean root.
func containerIdentity(pod *v1.Pod, c *v1.Container) (identity, error) {
	var uid, gid *int64
	var nonRoot *bool
	var id identity
	if psc := pod.Spec.SecurityContext; psc != nil {
		uid, gid, nonRoot = psc.RunAsUser, psc.RunAsGroup, psc.RunAsNonRoot
		for _, g := range psc.SupplementalGroups {
			id.groups = append(id.groups, uint32(g))
		}
		if psc.FSGroup != nil {
			id.groups = append(id.groups, uint32(*psc.FSGroup))
		}
	}
	if csc := c.SecurityContext; csc != nil {
		uid, gid = cmpOr(csc.RunAsUser, uid), cmpOr(csc.RunAsGroup, gid)
		nonRoot = cmpOr(csc.RunAsNonRoot, nonRoot)
	}
	if ptr.Deref(nonRoot, false) {
		if uid == nil {
			return id, fmt.Errorf("container has runAsNonRoot and image will run as root (pod: %q, container: %s)", pod.Name, c.Name)
		}
		if *uid == 0 {
			return id, fmt.Errorf("container's runAsUser breaks non-root policy (pod: %q, container: %s)", pod.Name, c.Name)
		}
	}
	id.uid, id.gid = uint32(ptr.Deref(uid, 0)), uint32(ptr.Deref(gid, 0))
	return id, nil
}

func cmpOr[T any](a, b *T) *T {
	if a != nil {
		return a
	}
	return b
}
