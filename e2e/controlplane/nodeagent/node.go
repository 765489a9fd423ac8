package main

import (
	"context"
	"os"
	"runtime"
	"syscall"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/pkg/version"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
)

const (
	leaseNamespace = "kube-node-lease"
	leaseDuration  = 40 * time.Second
	// The node-lifecycle controller marks a node NotReady when neither its Lease nor its Ready
	// condition was renewed within its grace period (50 s): renew as often as the kubelet.
	leaseRenewal   = 10 * time.Second
	statusInterval = 30 * time.Second
)

// registerNode creates the Node (or takes over an existing one of the same name, e.g. from a
// previous agent run) and posts a Ready status.
func (a *agent) registerNode(ctx context.Context) error {
	node := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: a.node, Labels: map[string]string{
		"kubernetes.io/hostname": a.node,
		"kubernetes.io/os":       runtime.GOOS,
		"kubernetes.io/arch":     runtime.GOARCH,
	}}}
	_, err := a.client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	return a.updateNodeStatus(ctx)
}

// updateNodeStatus replaces the node's status; controllers annotating a new Node (ttl,
// node-lifecycle) make conflicts likely, hence the retries.
func (a *agent) updateNodeStatus(ctx context.Context) error {
	return retry.RetryOnConflict(retry.DefaultBackoff, func() error {
		node, err := a.client.CoreV1().Nodes().Get(ctx, a.node, metav1.GetOptions{})
		if err != nil {
			return err
		}
		node.Status = a.nodeStatus()
		_, err = a.client.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{})
		return err
	})
}

func (a *agent) nodeStatus() v1.NodeStatus {
	now := metav1.Now()
	since := metav1.NewTime(a.started)
	cond := func(t v1.NodeConditionType, s v1.ConditionStatus, reason, msg string) v1.NodeCondition {
		return v1.NodeCondition{Type: t, Status: s, Reason: reason, Message: msg,
			LastHeartbeatTime: now, LastTransitionTime: since}
	}
	return v1.NodeStatus{
		Capacity:    a.capacity(),
		Allocatable: a.capacity(),
		Phase:       v1.NodeRunning,
		Conditions: []v1.NodeCondition{
			cond(v1.NodeMemoryPressure, v1.ConditionFalse, "KubeletHasSufficientMemory", "no memory pressure checks"),
			cond(v1.NodeDiskPressure, v1.ConditionFalse, "KubeletHasNoDiskPressure", "no disk pressure checks"),
			cond(v1.NodePIDPressure, v1.ConditionFalse, "KubeletHasSufficientPID", "no PID pressure checks"),
			cond(v1.NodeReady, v1.ConditionTrue, "KubeletReady", "mimeo-node-agent is posting ready status"),
		},
		Addresses: []v1.NodeAddress{
			{Type: v1.NodeInternalIP, Address: podIP},
			{Type: v1.NodeHostName, Address: a.node},
		},
		NodeInfo: v1.NodeSystemInfo{
			KernelVersion:           kernelVersion(),
			OSImage:                 "mimeo-node-agent (host processes)",
			ContainerRuntimeVersion: "mimeo://" + version.Get().GitVersion,
			KubeletVersion:          version.Get().GitVersion,
			OperatingSystem:         runtime.GOOS,
			Architecture:            runtime.GOARCH,
		},
	}
}

// capacity is the host's: CPUs, RAM, the root filesystem, and the kubelet's default pod limit.
func (a *agent) capacity() v1.ResourceList {
	var si syscall.Sysinfo_t
	_ = syscall.Sysinfo(&si)
	var fs syscall.Statfs_t
	_ = syscall.Statfs(a.root, &fs)
	return v1.ResourceList{
		v1.ResourceCPU:              *resource.NewQuantity(int64(runtime.NumCPU()), resource.DecimalSI),
		v1.ResourceMemory:           *resource.NewQuantity(int64(si.Totalram)*int64(si.Unit), resource.BinarySI),
		v1.ResourceEphemeralStorage: *resource.NewQuantity(int64(fs.Blocks)*fs.Bsize, resource.BinarySI),
		v1.ResourcePods:             *resource.NewQuantity(110, resource.DecimalSI),
	}
}

func kernelVersion() string {
	b, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return string(trimNewline(b))
}

func trimNewline(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}

// keepNodeAlive renews the node's Lease and heartbeats its status until ctx ends.
func (a *agent) keepNodeAlive(ctx context.Context) {
	lease := time.NewTicker(leaseRenewal)
	defer lease.Stop()
	status := time.NewTicker(statusInterval)
	defer status.Stop()
	if err := a.renewLease(ctx); err != nil {
		logf("lease: %v", err)
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-lease.C:
			if err := a.renewLease(ctx); err != nil && ctx.Err() == nil {
				logf("lease: %v", err)
			}
		case <-status.C:
			if err := a.updateNodeStatus(ctx); err != nil && ctx.Err() == nil {
				logf("node status: %v", err)
			}
		}
	}
}

func (a *agent) renewLease(ctx context.Context) error {
	leases := a.client.CoordinationV1().Leases(leaseNamespace)
	now := metav1.NewMicroTime(time.Now())
	l, err := leases.Get(ctx, a.node, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		node, err := a.client.CoreV1().Nodes().Get(ctx, a.node, metav1.GetOptions{})
		if err != nil {
			return err
		}
		// Owned by the Node, as the kubelet does: deleting the Node removes its Lease.
		l = &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: a.node, Namespace: leaseNamespace,
				OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: node.Name, UID: node.UID}}},
			Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To(a.node),
				LeaseDurationSeconds: ptr.To(int32(leaseDuration.Seconds())), RenewTime: &now},
		}
		_, err = leases.Create(ctx, l, metav1.CreateOptions{})
		return err
	}
	if err != nil {
		return err
	}
	l.Spec.RenewTime = &now
	_, err = leases.Update(ctx, l, metav1.UpdateOptions{})
	return err
}
