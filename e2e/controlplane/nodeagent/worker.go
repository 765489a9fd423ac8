package main

import (
	"context"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
)

// stopReason says why a pod's containers are being stopped; it decides what is reported.
type stopReason int

const (
	stopDeleting stopReason = iota + 1 // deletionTimestamp set: graceful stop, final status, final delete
	stopDeadline                       // activeDeadlineSeconds passed: graceful stop, Failed/DeadlineExceeded
	stopGone                           // the pod object is gone: kill, no more API calls
	stopAgent                          // the agent is shutting down: stop, leave the pod's status alone
)

// podWorker runs one pod: its volumes, init containers, containers, probes and status.
type podWorker struct {
	a   *agent
	ctx context.Context // the agent's: API calls end with it
	uid types.UID
	key string // namespace/name, for logs

	mu          sync.Mutex
	pod         *v1.Pod // the newest version seen
	inits, apps []*container
	volumes     map[string]volume
	sandboxed   bool // volumes are ready: PodReadyToStartContainers
	initialized bool // init containers succeeded
	startTime   metav1.Time
	phase       v1.PodPhase // set once terminal
	reason, msg string      // pod-level reason and message (terminal only)
	conditions  map[v1.PodConditionType]v1.PodCondition
	why         stopReason
	grace       time.Duration

	stopped  chan struct{} // closed: stop every container within grace
	killed   chan struct{} // closed: kill now
	stopOnce sync.Once
	killOnce sync.Once
	done     chan struct{} // closed when the worker has finished

	dirty      chan struct{} // status changed: patch it (capacity 1)
	lastStatus []byte        // last patch sent
}

// container is a container's spec and its reported status (guarded by podWorker.mu).
type container struct {
	spec   v1.Container
	init   bool
	status v1.ContainerStatus
	skip   bool // finished in a previous agent run: not run again
	env    []string
	id     identity
}

func newPodWorker(ctx context.Context, a *agent, pod *v1.Pod) *podWorker {
	w := &podWorker{a: a, ctx: ctx, uid: pod.UID, key: pod.Namespace + "/" + pod.Name, pod: pod,
		conditions: map[v1.PodConditionType]v1.PodCondition{},
		stopped:    make(chan struct{}), killed: make(chan struct{}), done: make(chan struct{}),
		dirty: make(chan struct{}, 1)}
	previous := map[string]v1.ContainerStatus{}
	for _, s := range append(append([]v1.ContainerStatus{}, pod.Status.InitContainerStatuses...), pod.Status.ContainerStatuses...) {
		previous[s.Name] = s
	}
	add := func(spec v1.Container, init bool) *container {
		c := &container{spec: spec, init: init, status: v1.ContainerStatus{Name: spec.Name, Image: spec.Image,
			ImageID: "mimeo://" + spec.Image, Started: ptr.To(false),
			State: v1.ContainerState{Waiting: &v1.ContainerStateWaiting{Reason: "ContainerCreating"}}}}
		if prev, ok := previous[spec.Name]; ok && pod.Status.StartTime != nil {
			w.adopt(c, prev)
		}
		return c
	}
	for _, c := range pod.Spec.InitContainers {
		w.inits = append(w.inits, add(c, true))
	}
	for _, c := range pod.Spec.Containers {
		w.apps = append(w.apps, add(c, false))
	}
	if pod.Status.StartTime != nil {
		w.startTime = *pod.Status.StartTime
	}
	return w
}

// adopt takes over a container started by a previous agent run. Its process is gone (it died
// with that agent): it is reported lost and restarted if the restart policy allows.
func (w *podWorker) adopt(c *container, prev v1.ContainerStatus) {
	c.status.RestartCount = prev.RestartCount
	switch {
	case prev.State.Terminated != nil:
		c.status.State = prev.State
		c.skip = c.init && prev.State.Terminated.ExitCode == 0 || !w.restarts(c, prev.State.Terminated.ExitCode)
	case prev.State.Running != nil:
		c.status.State = v1.ContainerState{Terminated: &v1.ContainerStateTerminated{
			ExitCode: 137, Reason: "ContainerStatusUnknown", StartedAt: prev.State.Running.StartedAt,
			FinishedAt: metav1.Now(), Message: "the process was lost when mimeo-node-agent restarted"}}
		c.skip = !w.restarts(c, 137)
		if !c.skip {
			c.status.RestartCount++
		}
	}
}

// update records a newer version of the pod; a deletion stops the containers gracefully.
func (w *podWorker) update(pod *v1.Pod) {
	w.mu.Lock()
	w.pod = pod
	w.mu.Unlock()
	if pod.DeletionTimestamp != nil {
		grace := time.Duration(ptr.Deref(pod.DeletionGracePeriodSeconds, 0)) * time.Second
		w.stop(stopDeleting, grace)
	}
}

// stop starts stopping the containers; the first reason wins.
func (w *podWorker) stop(why stopReason, grace time.Duration) {
	w.stopOnce.Do(func() {
		w.mu.Lock()
		w.why, w.grace = why, grace
		w.mu.Unlock()
		close(w.stopped)
	})
}

// kill stops the containers without grace: the pod is gone from the API.
func (w *podWorker) kill() {
	w.stop(stopGone, 0)
	w.killOnce.Do(func() {
		w.mu.Lock()
		if w.why != stopAgent {
			w.why = stopGone
		}
		w.mu.Unlock()
		close(w.killed)
	})
}

func (w *podWorker) isStopped() bool {
	select {
	case <-w.stopped:
		return true
	default:
		return false
	}
}

func (w *podWorker) snapshot() *v1.Pod {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.pod
}

func (w *podWorker) podGrace() time.Duration {
	return time.Duration(ptr.Deref(w.snapshot().Spec.TerminationGracePeriodSeconds, 30)) * time.Second
}

func (w *podWorker) stopGrace() time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.grace
}

// run is the pod's life on this node, then its final status and (when deleted) final delete.
func (w *podWorker) run() {
	defer close(w.done)
	defer w.a.workerDone(w)
	quit, loopDone := make(chan struct{}), make(chan struct{})
	go w.statusLoop(quit, loopDone)
	w.execute()
	close(quit)
	<-loopDone
	w.mu.Lock()
	why := w.why
	w.mu.Unlock()
	if why == stopAgent || why == stopGone {
		return
	}
	for i := 0; i < 5; i++ {
		if err := w.pushStatus(); err == nil || w.ctx.Err() != nil {
			break
		}
		time.Sleep(time.Second)
	}
	logf("pod %s %s", w.key, w.phase)
	if why == stopDeleting {
		w.a.finalDelete(w.ctx, w.snapshot())
	}
}

// execute sets up the volumes, runs the init containers in order, then the containers, and
// decides the terminal phase.
func (w *podWorker) execute() {
	pod := w.snapshot()
	for _, c := range append(append([]*container{}, w.inits...), w.apps...) {
		id, err := containerIdentity(pod, &c.spec)
		if err != nil {
			w.setWaiting(c, "CreateContainerConfigError", err.Error())
			w.finish(v1.PodFailed, "CreateContainerConfigError", err.Error())
			return
		}
		c.id = id
	}
	w.mu.Lock()
	if w.startTime.IsZero() {
		w.startTime = metav1.Now()
	}
	start := w.startTime.Time
	w.mu.Unlock()
	w.markDirty()
	// A pod already being deleted (e.g. adopted after an agent restart) stops at once.
	if pod.DeletionTimestamp != nil {
		w.update(pod)
	}
	if ads := pod.Spec.ActiveDeadlineSeconds; ads != nil {
		t := time.AfterFunc(time.Until(start.Add(time.Duration(*ads)*time.Second)),
			func() { w.stop(stopDeadline, w.podGrace()) })
		defer t.Stop()
	}

	for {
		vols, refresh, err := w.setUpVolumes(pod)
		if err == nil {
			w.mu.Lock()
			w.volumes, w.sandboxed = vols, true
			w.mu.Unlock()
			if refresh > 0 {
				go w.refreshTokens(pod, refresh)
			}
			break
		}
		for _, c := range append(append([]*container{}, w.inits...), w.apps...) {
			w.setWaiting(c, "ContainerCreating", err.Error())
		}
		select {
		case <-w.stopped:
			w.finishStopped()
			return
		case <-time.After(2 * time.Second):
		}
		pod = w.snapshot()
	}

	for _, c := range w.inits {
		if c.skip {
			if c.status.State.Terminated.ExitCode != 0 {
				w.finish(v1.PodFailed, "", "")
				return
			}
			continue
		}
		if code := w.runContainer(c); w.isStopped() {
			w.finishStopped()
			return
		} else if code != 0 {
			w.finish(v1.PodFailed, "", "")
			return
		}
	}
	w.mu.Lock()
	w.initialized = true
	w.mu.Unlock()
	w.markDirty()

	var wg sync.WaitGroup
	for _, c := range w.apps {
		if c.skip {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.runContainer(c)
		}()
	}
	wg.Wait()
	w.finishStopped()
}

// finishStopped decides the terminal phase once no container runs any more.
func (w *podWorker) finishStopped() {
	w.mu.Lock()
	why := w.why
	ok := true
	for _, c := range w.apps {
		ok = ok && c.status.State.Terminated != nil && c.status.State.Terminated.ExitCode == 0
	}
	w.mu.Unlock()
	switch {
	case why == stopDeadline:
		w.finish(v1.PodFailed, "DeadlineExceeded", "Pod was active on the node longer than the specified deadline")
	case ok:
		w.finish(v1.PodSucceeded, "", "")
	default:
		w.finish(v1.PodFailed, "", "")
	}
}

func (w *podWorker) finish(phase v1.PodPhase, reason, msg string) {
	w.mu.Lock()
	w.phase, w.reason, w.msg = phase, reason, msg
	w.mu.Unlock()
	w.markDirty()
}

// restarts reports whether the restart policy restarts c after it exited with code.
func (w *podWorker) restarts(c *container, code int32) bool {
	switch policy := w.snapshot().Spec.RestartPolicy; {
	case c.init:
		return policy != v1.RestartPolicyNever && code != 0
	case policy == v1.RestartPolicyAlways:
		return true
	case policy == v1.RestartPolicyOnFailure:
		return code != 0
	}
	return false
}

func (w *podWorker) setWaiting(c *container, reason, msg string) {
	w.mu.Lock()
	if t := c.status.State.Terminated; t != nil {
		c.status.LastTerminationState = v1.ContainerState{Terminated: t}
	}
	c.status.State = v1.ContainerState{Waiting: &v1.ContainerStateWaiting{Reason: reason, Message: msg}}
	w.mu.Unlock()
	w.markDirty()
}
