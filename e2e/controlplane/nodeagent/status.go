package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

func (w *podWorker) markDirty() {
	select {
	case w.dirty <- struct{}{}:
	default:
	}
}

// statusLoop patches the pod status whenever it changed, until quit closes.
func (w *podWorker) statusLoop(quit <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	for {
		select {
		case <-quit:
			return
		case <-w.dirty:
		}
		if err := w.pushStatus(); err != nil {
			if w.ctx.Err() == nil {
				logf("pod %s status: %v (will retry)", w.key, err)
			}
			select {
			case <-quit:
				return
			case <-time.After(time.Second):
				w.markDirty()
			}
		}
	}
}

// pushStatus patches the status subresource with the full status, unless it did not change.
// The uid in the patch makes it fail on a new pod of the same name.
func (w *podWorker) pushStatus() error {
	w.mu.Lock()
	status := w.buildStatus()
	pod := w.pod
	w.mu.Unlock()
	body, err := json.Marshal(map[string]any{"metadata": map[string]any{"uid": pod.UID}, "status": status})
	if err != nil {
		return err
	}
	if string(body) == string(w.lastStatus) {
		return nil
	}
	_, err = w.a.client.CoreV1().Pods(pod.Namespace).Patch(w.ctx, pod.Name, types.StrategicMergePatchType, body,
		metav1.PatchOptions{}, "status")
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err == nil {
		w.lastStatus = body
	}
	return err
}

// buildStatus computes the pod status from the containers' states (w.mu held).
func (w *podWorker) buildStatus() v1.PodStatus {
	ips := []v1.PodIP{{IP: podIP}}
	s := v1.PodStatus{Phase: w.currentPhase(), Reason: w.reason, Message: w.msg,
		HostIP: podIP, HostIPs: []v1.HostIP{{IP: podIP}}, PodIP: podIP, PodIPs: ips, QOSClass: w.pod.Status.QOSClass}
	if !w.startTime.IsZero() {
		s.StartTime = &w.startTime
	}
	var unready []string
	for _, c := range w.apps {
		if !c.status.Ready {
			unready = append(unready, c.spec.Name)
		}
		s.ContainerStatuses = append(s.ContainerStatuses, c.status)
	}
	for _, c := range w.inits {
		s.InitContainerStatuses = append(s.InitContainerStatuses, c.status)
	}
	terminal := s.Phase == v1.PodSucceeded || s.Phase == v1.PodFailed
	ready, readyReason, readyMsg := v1.ConditionTrue, "", ""
	switch {
	case terminal:
		ready, readyReason = v1.ConditionFalse, "PodCompleted"
	case len(unready) > 0:
		ready, readyReason = v1.ConditionFalse, "ContainersNotReady"
		readyMsg = fmt.Sprintf("containers with unready status: [%s]", strings.Join(unready, " "))
	}
	initialized, initReason := v1.ConditionTrue, ""
	if !w.initialized && len(w.inits) > 0 {
		initialized, initReason = v1.ConditionFalse, "ContainersNotInitialized"
		if terminal {
			initReason = "PodCompleted"
		}
	}
	sandbox := v1.ConditionFalse
	if w.sandboxed && !terminal {
		sandbox = v1.ConditionTrue
	}
	s.Conditions = []v1.PodCondition{
		w.condition(v1.PodReadyToStartContainers, sandbox, "", ""),
		w.condition(v1.PodInitialized, initialized, initReason, ""),
		w.condition(v1.PodReady, ready, readyReason, readyMsg),
		w.condition(v1.ContainersReady, ready, readyReason, readyMsg),
		w.condition(v1.PodScheduled, v1.ConditionTrue, "", ""),
	}
	return s
}

// currentPhase: the terminal phase once decided; Running once a container has started.
func (w *podWorker) currentPhase() v1.PodPhase {
	if w.phase != "" {
		return w.phase
	}
	if !w.initialized {
		return v1.PodPending
	}
	for _, c := range w.apps {
		if c.status.State.Waiting == nil || c.status.RestartCount > 0 {
			return v1.PodRunning
		}
	}
	return v1.PodPending
}

// condition keeps the last transition time of a condition whose status did not change.
func (w *podWorker) condition(t v1.PodConditionType, s v1.ConditionStatus, reason, msg string) v1.PodCondition {
	c := v1.PodCondition{Type: t, Status: s, Reason: reason, Message: msg, LastTransitionTime: metav1.Now()}
	if old, ok := w.conditions[t]; ok && old.Status == s {
		c.LastTransitionTime = old.LastTransitionTime
	}
	w.conditions[t] = c
	return c
}
