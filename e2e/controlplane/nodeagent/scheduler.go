package main

import (
	"context"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"
)

// runScheduler binds every live pod without a node to this node: a one-node cluster needs no
// filtering or scoring (node selectors, affinities and taints are ignored). Pods whose claims
// are not bound yet are bound anyway; their containers wait for the volumes.
func (a *agent) runScheduler(ctx context.Context, informer cache.SharedIndexInformer) {
	q := runQueue(ctx, "bind", func(ctx context.Context, key string) error {
		obj, exists, err := informer.GetIndexer().GetByKey(key)
		if err != nil || !exists {
			return err
		}
		pod := obj.(*v1.Pod)
		if pod.Spec.NodeName != "" || pod.DeletionTimestamp != nil {
			return nil
		}
		binding := &v1.Binding{
			ObjectMeta: metav1.ObjectMeta{Name: pod.Name, Namespace: pod.Namespace, UID: pod.UID},
			Target:     v1.ObjectReference{Kind: "Node", Name: a.node},
		}
		err = a.client.CoreV1().Pods(pod.Namespace).Bind(ctx, binding, metav1.CreateOptions{})
		switch {
		case apierrors.IsNotFound(err) || apierrors.IsConflict(err): // gone, or bound meanwhile
			return nil
		case err != nil:
			return err
		}
		logf("bound pod %s to %s", key, a.node)
		return nil
	})
	_, _ = informer.AddEventHandler(enqueue(q))
}
