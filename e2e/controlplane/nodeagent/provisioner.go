package main

import (
	"context"
	"os"
	"path/filepath"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	coreinformers "k8s.io/client-go/informers/core/v1"
	"k8s.io/utils/ptr"
)

// pvDir is the host directory backing the claim namespace/name: ROOT/pv/<namespace>/<claim>.
// Tests may fill it before creating the claim; it is never removed (reclaim policy Retain), so a
// claim re-created with the same name finds the same data.
func (a *agent) pvDir(namespace, claim string) string {
	return filepath.Join(a.root, "pv", namespace, claim)
}

// runProvisioner creates a hostPath PersistentVolume, pre-bound to the claim, for every
// pending claim without a volume (any storage class). The real PV controller then binds the
// pair, as it does for dynamically provisioned volumes.
func (a *agent) runProvisioner(ctx context.Context, informer coreinformers.PersistentVolumeClaimInformer) {
	q := runQueue(ctx, "provision", func(ctx context.Context, key string) error {
		obj, exists, err := informer.Informer().GetIndexer().GetByKey(key)
		if err != nil || !exists {
			return err
		}
		pvc := obj.(*v1.PersistentVolumeClaim)
		if pvc.Status.Phase != v1.ClaimPending || pvc.Spec.VolumeName != "" || pvc.DeletionTimestamp != nil {
			return nil
		}
		if pvc.Spec.VolumeMode != nil && *pvc.Spec.VolumeMode == v1.PersistentVolumeBlock {
			logf("provision %s: block volumes are not supported", key)
			return nil
		}
		dir := a.pvDir(pvc.Namespace, pvc.Name)
		if _, err := os.Stat(dir); os.IsNotExist(err) {
			// World-writable, as the common local-path provisioner makes them: a non-root pod
			// without fsGroup can write its claim too.
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return err
			}
			if err := os.Chmod(dir, 0o777); err != nil {
				return err
			}
		}
		modes := pvc.Spec.AccessModes
		if len(modes) == 0 {
			modes = []v1.PersistentVolumeAccessMode{v1.ReadWriteOnce}
		}
		pv := &v1.PersistentVolume{
			ObjectMeta: metav1.ObjectMeta{Name: "pvc-" + string(pvc.UID),
				Labels: map[string]string{"mimeo.dev/node-agent": a.node}},
			Spec: v1.PersistentVolumeSpec{
				Capacity:                      v1.ResourceList{v1.ResourceStorage: pvc.Spec.Resources.Requests[v1.ResourceStorage]},
				AccessModes:                   modes,
				PersistentVolumeReclaimPolicy: v1.PersistentVolumeReclaimRetain,
				StorageClassName:              ptr.Deref(pvc.Spec.StorageClassName, ""),
				VolumeMode:                    pvc.Spec.VolumeMode,
				ClaimRef: &v1.ObjectReference{Kind: "PersistentVolumeClaim", APIVersion: "v1",
					Namespace: pvc.Namespace, Name: pvc.Name, UID: pvc.UID},
				PersistentVolumeSource: v1.PersistentVolumeSource{HostPath: &v1.HostPathVolumeSource{
					Path: dir, Type: ptr.To(v1.HostPathDirectoryOrCreate)}},
			},
		}
		_, err = a.client.CoreV1().PersistentVolumes().Create(ctx, pv, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			return nil
		}
		if err == nil {
			logf("provisioned %s for claim %s at %s", pv.Name, key, dir)
		}
		return err
	})
	_, _ = informer.Informer().AddEventHandler(enqueue(q))
}
