package main

import (
	"context"
	"path/filepath"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"
)

// agentStopGrace caps the grace period of containers stopped because the agent exits.
const agentStopGrace = 10 * time.Second

// runPods runs the pods the informer (pods bound to this node) reports, one podWorker each.
func (a *agent) runPods(ctx context.Context, informer cache.SharedIndexInformer) {
	_, _ = informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { a.syncPod(ctx, obj.(*v1.Pod)) },
		UpdateFunc: func(_, obj any) { a.syncPod(ctx, obj.(*v1.Pod)) },
		DeleteFunc: func(obj any) {
			if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = tomb.Obj
			}
			if pod, ok := obj.(*v1.Pod); ok {
				a.forgetPod(pod)
			}
		},
	})
}

// syncPod hands a pod bound to this node to its worker, starting one for a live pod.
func (a *agent) syncPod(ctx context.Context, pod *v1.Pod) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.stopping {
		return
	}
	if w := a.workers[pod.UID]; w != nil {
		w.update(pod)
		return
	}
	terminal := pod.Status.Phase == v1.PodSucceeded || pod.Status.Phase == v1.PodFailed
	if a.finished[pod.UID] || terminal {
		// Nothing runs: the kubelet's part of a graceful delete is just the final delete.
		if pod.DeletionTimestamp != nil && !a.deleting[pod.UID] {
			a.deleting[pod.UID] = true
			go a.finalDelete(ctx, pod)
		}
		return
	}
	w := newPodWorker(ctx, a, pod)
	a.workers[pod.UID] = w
	go w.run()
}

// forgetPod handles a pod removed from the API: its processes are killed at once.
func (a *agent) forgetPod(pod *v1.Pod) {
	a.mu.Lock()
	w := a.workers[pod.UID]
	delete(a.finished, pod.UID)
	delete(a.deleting, pod.UID)
	a.mu.Unlock()
	if w != nil {
		w.kill()
	}
}

// workerDone forgets a worker whose pod has finished on this node; unless the agent is
// stopping, the pod is never run again by this agent process.
func (a *agent) workerDone(w *podWorker) {
	w.mu.Lock()
	why := w.why
	w.mu.Unlock()
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.workers, w.uid)
	if why != stopAgent {
		a.finished[w.uid] = true
	}
}

// finalDelete removes a pod whose containers are all stopped, as the kubelet does at the end
// of a graceful deletion.
func (a *agent) finalDelete(ctx context.Context, pod *v1.Pod) {
	err := a.client.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{
		GracePeriodSeconds: ptr.To(int64(0)), Preconditions: &metav1.Preconditions{UID: &pod.UID}})
	switch {
	case err == nil:
		logf("pod %s/%s deleted", pod.Namespace, pod.Name)
	case !apierrors.IsNotFound(err) && !apierrors.IsConflict(err): // not: gone, or a new pod of that name
		logf("delete pod %s/%s: %v", pod.Namespace, pod.Name, err)
	}
}

// shutdown stops every pod's processes (SIGTERM, SIGKILL after at most agentStopGrace) and
// waits for them. Pod statuses are left as they are: a restarted agent adopts the pods.
func (a *agent) shutdown() {
	a.mu.Lock()
	a.stopping = true
	var ws []*podWorker
	for _, w := range a.workers {
		ws = append(ws, w)
	}
	a.mu.Unlock()
	for _, w := range ws {
		w.stop(stopAgent, min(w.podGrace(), agentStopGrace))
	}
	for _, w := range ws {
		<-w.done
	}
	logf("stopped (%d pods' processes)", len(ws))
}

func (a *agent) podDir(uid types.UID) string { return filepath.Join(a.root, "pods", string(uid)) }

func (a *agent) logPath(pod *v1.Pod, c string) string {
	return filepath.Join(a.root, "logs", pod.Namespace+"_"+pod.Name+"_"+c+".log")
}
