package main

import (
	"fmt"
	"sort"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	resourcehelper "k8s.io/kubernetes/pkg/api/v1/resource"
	"k8s.io/kubernetes/pkg/fieldpath"
	"k8s.io/kubernetes/third_party/forked/golang/expansion"
	"k8s.io/utils/ptr"
)

const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// containerEnv builds c's environment like the kubelet: envFrom, then env (values may refer to
// earlier variables with $(VAR)), on top of PATH, HOSTNAME, HOME and the API server's address.
// It returns the environment as KEY=VALUE and as a map for expanding command and args.
func (w *podWorker) containerEnv(pod *v1.Pod, c *v1.Container, uid uint32) ([]string, map[string]string, error) {
	var names []string
	vars := map[string]string{}
	set := func(k, v string) {
		if _, ok := vars[k]; !ok {
			names = append(names, k)
		}
		vars[k] = v
	}
	home := "/"
	if uid == 0 {
		home = "/root"
	}
	set("PATH", defaultPath)
	set("HOSTNAME", pod.Name)
	set("HOME", home)
	set("KUBERNETES_SERVICE_HOST", w.a.apiHost)
	set("KUBERNETES_SERVICE_PORT", w.a.apiPort)
	src := objectSource{w: w, namespace: pod.Namespace}

	for _, from := range c.EnvFrom {
		var data map[string]string
		var err error
		var optional bool
		switch {
		case from.ConfigMapRef != nil:
			optional = ptr.Deref(from.ConfigMapRef.Optional, false)
			data, err = src.configMapData(from.ConfigMapRef.Name)
		case from.SecretRef != nil:
			optional = ptr.Deref(from.SecretRef.Optional, false)
			data, err = src.secretData(from.SecretRef.Name)
		}
		if apierrors.IsNotFound(err) && optional {
			continue
		}
		if err != nil {
			return nil, nil, err
		}
		keys := make([]string, 0, len(data))
		for k := range data {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if len(validation.IsEnvVarName(from.Prefix+k)) == 0 { // invalid names are skipped
				set(from.Prefix+k, data[k])
			}
		}
	}

	for _, e := range c.Env {
		if e.ValueFrom == nil {
			set(e.Name, expansion.Expand(e.Value, expansion.MappingFuncFor(vars)))
			continue
		}
		v, ok, err := w.envValueFrom(pod, c, &src, e.ValueFrom)
		if err != nil {
			return nil, nil, fmt.Errorf("env %s: %w", e.Name, err)
		}
		if ok {
			set(e.Name, v)
		}
	}
	env := make([]string, len(names))
	for i, k := range names {
		env[i] = k + "=" + vars[k]
	}
	return env, vars, nil
}

// envValueFrom resolves a valueFrom; ok is false for an optional key that is missing.
func (w *podWorker) envValueFrom(pod *v1.Pod, c *v1.Container, src *objectSource, from *v1.EnvVarSource) (string, bool, error) {
	switch {
	case from.FieldRef != nil:
		v, err := fieldValue(pod, from.FieldRef.FieldPath)
		return v, err == nil, err
	case from.ResourceFieldRef != nil:
		v, err := w.resourceValue(pod, c.Name, from.ResourceFieldRef)
		return v, err == nil, err
	case from.ConfigMapKeyRef != nil:
		ref := from.ConfigMapKeyRef
		data, err := src.configMapData(ref.Name)
		return keyValue(data, err, "configmap", ref.Name, ref.Key, ptr.Deref(ref.Optional, false))
	case from.SecretKeyRef != nil:
		ref := from.SecretKeyRef
		data, err := src.secretData(ref.Name)
		return keyValue(data, err, "secret", ref.Name, ref.Key, ptr.Deref(ref.Optional, false))
	}
	return "", false, fmt.Errorf("unsupported valueFrom")
}

func keyValue(data map[string]string, err error, kind, name, key string, optional bool) (string, bool, error) {
	if apierrors.IsNotFound(err) && optional {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	v, ok := data[key]
	if !ok && !optional {
		return "", false, fmt.Errorf("couldn't find key %s in %s %s", key, kind, name)
	}
	return v, ok, nil
}

// fieldValue is a downward API field: the pod and host IPs are this node's address.
func fieldValue(pod *v1.Pod, path string) (string, error) {
	switch path {
	case "spec.nodeName":
		return pod.Spec.NodeName, nil
	case "spec.serviceAccountName":
		return pod.Spec.ServiceAccountName, nil
	case "status.podIP", "status.podIPs", "status.hostIP", "status.hostIPs":
		return podIP, nil
	}
	return fieldpath.ExtractFieldPathAsString(pod, path)
}

// resourceValue is a downward API resource field; unset limits are the node's allocatable.
func (w *podWorker) resourceValue(pod *v1.Pod, container string, ref *v1.ResourceFieldSelector) (string, error) {
	if ref.ContainerName != "" {
		container = ref.ContainerName
	}
	return resourcehelper.ExtractResourceValueByContainerNameAndNodeAllocatable(ref, pod, container, w.a.capacity())
}

// objectSource reads the ConfigMaps and Secrets of one namespace, each at most once.
type objectSource struct {
	w          *podWorker
	namespace  string
	configMaps map[string]*v1.ConfigMap
	secrets    map[string]*v1.Secret
}

func (s *objectSource) configMap(name string) (*v1.ConfigMap, error) {
	if cm, ok := s.configMaps[name]; ok {
		return cm, nil
	}
	cm, err := s.w.a.client.CoreV1().ConfigMaps(s.namespace).Get(s.w.ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	if s.configMaps == nil {
		s.configMaps = map[string]*v1.ConfigMap{}
	}
	s.configMaps[name] = cm
	return cm, nil
}

func (s *objectSource) secret(name string) (*v1.Secret, error) {
	if sec, ok := s.secrets[name]; ok {
		return sec, nil
	}
	sec, err := s.w.a.client.CoreV1().Secrets(s.namespace).Get(s.w.ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	if s.secrets == nil {
		s.secrets = map[string]*v1.Secret{}
	}
	s.secrets[name] = sec
	return sec, nil
}

func (s *objectSource) configMapData(name string) (map[string]string, error) {
	cm, err := s.configMap(name)
	if err != nil {
		return nil, err
	}
	return cm.Data, nil
}

func (s *objectSource) secretData(name string) (map[string]string, error) {
	sec, err := s.secret(name)
	if err != nil {
		return nil, err
	}
	data := make(map[string]string, len(sec.Data))
	for k, v := range sec.Data {
		data[k] = string(v)
	}
	return data, nil
}
