package main

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// volume is the host path bind-mounted for a pod volume.
type volume struct {
	path     string
	readOnly bool // Secret, ConfigMap, downward API and projected volumes are read-only, as with the kubelet
}

// file is one file of a volume made of API data.
type file struct {
	data []byte
	mode int32
}

// setUpVolumes prepares every volume of the pod on the host. Layout:
//
//	emptyDir                    ROOT/pods/<pod uid>/volumes/<volume>  (mode 0777, as the kubelet's)
//	persistentVolumeClaim       the bound PV's hostPath (ROOT/pv/<namespace>/<claim> when provisioned here)
//	ephemeral                   the claim <pod>-<volume> the ephemeral-volume controller creates
//	hostPath                    the path itself
//	secret, configMap,          files in ROOT/pods/<pod uid>/volumes/<volume>
//	downwardAPI, projected
//
// It also returns how often bound service-account tokens must be renewed (0: none). An error
// (an unbound claim, a missing Secret) is retried by the caller.
func (w *podWorker) setUpVolumes(pod *v1.Pod) (map[string]volume, time.Duration, error) {
	vols := map[string]volume{}
	var refresh time.Duration
	var fsGroup *int64
	if pod.Spec.SecurityContext != nil {
		fsGroup = pod.Spec.SecurityContext.FSGroup
	}
	for _, vol := range pod.Spec.Volumes {
		dir := filepath.Join(w.a.podDir(pod.UID), "volumes", vol.Name)
		v := volume{path: dir}
		var err error
		switch {
		case vol.EmptyDir != nil:
			if err = os.MkdirAll(dir, 0o777); err == nil {
				err = os.Chmod(dir, 0o777)
			}
		case vol.PersistentVolumeClaim != nil:
			v.path, err = w.claimPath(pod.Namespace, vol.PersistentVolumeClaim.ClaimName)
			v.readOnly = vol.PersistentVolumeClaim.ReadOnly
		case vol.Ephemeral != nil:
			v.path, err = w.claimPath(pod.Namespace, pod.Name+"-"+vol.Name)
		case vol.HostPath != nil:
			v.path = vol.HostPath.Path
			if t := ptr.Deref(vol.HostPath.Type, ""); t == v1.HostPathDirectoryOrCreate {
				err = os.MkdirAll(v.path, 0o755)
			} else if t == v1.HostPathFileOrCreate {
				err = ensureFile(v.path)
			}
		default:
			var files map[string]file
			var ttl time.Duration
			if files, ttl, err = w.volumeFiles(pod, vol); err == nil {
				err = writeFiles(dir, files, fsGroup)
			}
			if ttl > 0 && (refresh == 0 || ttl < refresh) {
				refresh = ttl
			}
			v.readOnly = true
		}
		if err != nil {
			return nil, 0, fmt.Errorf("volume %s: %w", vol.Name, err)
		}
		if fsGroup != nil && (vol.EmptyDir != nil || vol.PersistentVolumeClaim != nil || vol.Ephemeral != nil) {
			if err := applyFSGroup(v.path, *fsGroup); err != nil {
				return nil, 0, fmt.Errorf("volume %s: fsGroup: %w", vol.Name, err)
			}
		}
		vols[vol.Name] = v
	}
	return vols, refresh, nil
}

// claimPath is the host path of the PV bound to a claim; an unbound claim is an error.
func (w *podWorker) claimPath(namespace, name string) (string, error) {
	pvc, err := w.a.pvcs.PersistentVolumeClaims(namespace).Get(name)
	if err != nil {
		return "", err
	}
	if pvc.Status.Phase != v1.ClaimBound {
		return "", fmt.Errorf("persistentvolumeclaim %s/%s is not bound yet", namespace, name)
	}
	pv, err := w.a.pvs.Get(pvc.Spec.VolumeName)
	if err != nil {
		return "", err
	}
	switch {
	case pv.Spec.HostPath != nil:
		return pv.Spec.HostPath.Path, os.MkdirAll(pv.Spec.HostPath.Path, 0o755)
	case pv.Spec.Local != nil:
		return pv.Spec.Local.Path, nil
	}
	return "", fmt.Errorf("persistentvolume %s is neither hostPath nor local", pv.Name)
}

// volumeFiles computes the files of a Secret, ConfigMap, downward API or projected volume,
// and the renewal period of its service-account token (0: none).
func (w *podWorker) volumeFiles(pod *v1.Pod, vol v1.Volume) (map[string]file, time.Duration, error) {
	files := map[string]file{}
	src := objectSource{w: w, namespace: pod.Namespace}
	switch {
	case vol.Secret != nil:
		s := vol.Secret
		data, err := src.secretData(s.SecretName)
		return files, 0, w.keyFiles(files, data, err, s.Items, mode(s.DefaultMode), ptr.Deref(s.Optional, false))
	case vol.ConfigMap != nil:
		c := vol.ConfigMap
		data, err := configMapFiles(&src, c.Name)
		return files, 0, w.keyFiles(files, data, err, c.Items, mode(c.DefaultMode), ptr.Deref(c.Optional, false))
	case vol.DownwardAPI != nil:
		return files, 0, w.downwardFiles(files, pod, vol.DownwardAPI.Items, mode(vol.DownwardAPI.DefaultMode))
	case vol.Projected != nil:
		return w.projectedFiles(files, pod, &src, vol.Projected)
	}
	return nil, 0, fmt.Errorf("volume type not supported by mimeo-node-agent")
}

func (w *podWorker) projectedFiles(files map[string]file, pod *v1.Pod, src *objectSource, p *v1.ProjectedVolumeSource) (map[string]file, time.Duration, error) {
	def := mode(p.DefaultMode)
	var refresh time.Duration
	for _, s := range p.Sources {
		var err error
		switch {
		case s.Secret != nil:
			data, gerr := src.secretData(s.Secret.Name)
			err = w.keyFiles(files, data, gerr, s.Secret.Items, def, ptr.Deref(s.Secret.Optional, false))
		case s.ConfigMap != nil:
			data, gerr := configMapFiles(src, s.ConfigMap.Name)
			err = w.keyFiles(files, data, gerr, s.ConfigMap.Items, def, ptr.Deref(s.ConfigMap.Optional, false))
		case s.DownwardAPI != nil:
			err = w.downwardFiles(files, pod, s.DownwardAPI.Items, def)
		case s.ServiceAccountToken != nil:
			var token string
			t := s.ServiceAccountToken
			if token, err = w.token(pod, t); err == nil {
				files[t.Path] = file{data: []byte(token), mode: def}
				// Renewed at 80 % of its lifetime, as the kubelet does.
				refresh = time.Duration(ptr.Deref(t.ExpirationSeconds, 3600)) * time.Second * 8 / 10
			}
		default:
			err = fmt.Errorf("projected source not supported by mimeo-node-agent")
		}
		if err != nil {
			return nil, 0, err
		}
	}
	return files, refresh, nil
}

// token requests a service-account token bound to the pod, for the audience asked (empty: the
// API server's own).
func (w *podWorker) token(pod *v1.Pod, t *v1.ServiceAccountTokenProjection) (string, error) {
	req := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		ExpirationSeconds: t.ExpirationSeconds,
		BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
	}}
	if t.Audience != "" {
		req.Spec.Audiences = []string{t.Audience}
	}
	resp, err := w.a.client.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(w.ctx, pod.Spec.ServiceAccountName, req, metav1.CreateOptions{})
	if err != nil {
		return "", err
	}
	return resp.Status.Token, nil
}

// refreshTokens rewrites the projected volumes holding tokens every period while the pod runs.
func (w *podWorker) refreshTokens(pod *v1.Pod, period time.Duration) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-w.stopped:
			return
		case <-t.C:
		}
		for _, vol := range pod.Spec.Volumes {
			if vol.Projected == nil {
				continue
			}
			var fsGroup *int64
			if pod.Spec.SecurityContext != nil {
				fsGroup = pod.Spec.SecurityContext.FSGroup
			}
			files, _, err := w.volumeFiles(pod, vol)
			if err == nil {
				err = writeFiles(filepath.Join(w.a.podDir(pod.UID), "volumes", vol.Name), files, fsGroup)
			}
			if err != nil {
				logf("pod %s: renew volume %s: %v", w.key, vol.Name, err)
			}
		}
	}
}

func configMapFiles(src *objectSource, name string) (map[string]string, error) {
	cm, err := src.configMap(name)
	if err != nil {
		return nil, err
	}
	data := make(map[string]string, len(cm.Data)+len(cm.BinaryData))
	for k, v := range cm.Data {
		data[k] = v
	}
	for k, v := range cm.BinaryData {
		data[k] = string(v)
	}
	return data, nil
}

// keyFiles adds the files of a Secret's or ConfigMap's keys (all, or the listed items).
func (w *podWorker) keyFiles(files map[string]file, data map[string]string, err error, items []v1.KeyToPath, def int32, optional bool) error {
	if apierrors.IsNotFound(err) && optional {
		return nil
	}
	if err != nil {
		return err
	}
	if len(items) == 0 {
		for k, v := range data {
			files[k] = file{data: []byte(v), mode: def}
		}
		return nil
	}
	for _, it := range items {
		v, ok := data[it.Key]
		if !ok {
			if optional {
				continue
			}
			return fmt.Errorf("key %s not found", it.Key)
		}
		files[it.Path] = file{data: []byte(v), mode: ptr.Deref(it.Mode, def)}
	}
	return nil
}

func (w *podWorker) downwardFiles(files map[string]file, pod *v1.Pod, items []v1.DownwardAPIVolumeFile, def int32) error {
	for _, it := range items {
		var v string
		var err error
		switch {
		case it.FieldRef != nil:
			v, err = fieldValue(pod, it.FieldRef.FieldPath)
		case it.ResourceFieldRef != nil:
			v, err = w.resourceValue(pod, "", it.ResourceFieldRef)
		}
		if err != nil {
			return err
		}
		files[it.Path] = file{data: []byte(v), mode: ptr.Deref(it.Mode, def)}
	}
	return nil
}

func mode(m *int32) int32 { return ptr.Deref(m, 0o644) }

// writeFiles writes files under dir, each replaced atomically (a process reading a renewed
// token never sees half of it). With fsGroup, files belong to that group and are group-readable.
func writeFiles(dir string, files map[string]file, fsGroup *int64) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for name, f := range files {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return err
		}
		tmp := filepath.Join(filepath.Dir(path), ".tmp."+filepath.Base(path))
		if err := os.WriteFile(tmp, f.data, 0o600); err != nil {
			return err
		}
		perm := fs.FileMode(f.mode) & fs.ModePerm
		if fsGroup != nil {
			if err := os.Chown(tmp, -1, int(*fsGroup)); err != nil {
				return err
			}
			perm |= 0o440
		}
		if err := os.Chmod(tmp, perm); err != nil {
			return err
		}
		if err := os.Rename(tmp, path); err != nil {
			return err
		}
	}
	return nil
}

// applyFSGroup gives group gid read-write access to the volume like the kubelet: group
// ownership of everything, g+rw (g+x on directories) and setgid directories, so new files
// get the group too.
func applyFSGroup(root string, gid int64) error {
	return filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := os.Lchown(path, -1, int(gid)); err != nil {
			return err
		}
		if d.Type()&fs.ModeSymlink != 0 {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		m := info.Mode() | 0o060
		if d.IsDir() {
			m |= 0o010 | fs.ModeSetgid
		}
		return os.Chmod(path, m)
	})
}

// ensureSubPath creates a missing subPath directory, as the kubelet does.
func ensureSubPath(path string) error {
	if _, err := os.Stat(path); os.IsNotExist(err) {
		return os.MkdirAll(path, 0o755)
	}
	return nil
}

func ensureFile(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	return f.Close()
}
