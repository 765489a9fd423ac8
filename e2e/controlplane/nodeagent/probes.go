package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

// startProbes runs c's startup, readiness and liveness probes against process p until done
// closes. Readiness and liveness wait for the startup probe; a container without a readiness
// probe is ready once started. A failed liveness or startup probe stops the process, which
// is then restarted as the restart policy says.
func (w *podWorker) startProbes(c *container, p *process, done <-chan struct{}) {
	started := make(chan struct{})
	unhealthy := func(kind string) {
		logf("pod %s container %s failed its %s probe, stopping it", w.key, c.spec.Name, kind)
		go p.stop(w.podGrace(), w.killed)
	}
	if sp := c.spec.StartupProbe; sp != nil {
		go runProbe(done, sp, w.check(c, sp, p), func(ok bool) bool {
			if ok {
				w.setProbed(c, func(s *v1.ContainerStatus) { s.Started = ptr.To(true) })
				close(started)
			} else {
				unhealthy("startup")
			}
			return true
		})
	} else {
		w.setProbed(c, func(s *v1.ContainerStatus) { s.Started = ptr.To(true) })
		close(started)
	}
	go func() {
		select {
		case <-done:
			return
		case <-started:
		}
		if rp := c.spec.ReadinessProbe; rp != nil {
			go runProbe(done, rp, w.check(c, rp, p), func(ok bool) bool {
				w.setProbed(c, func(s *v1.ContainerStatus) { s.Ready = ok })
				return false
			})
		} else {
			w.setProbed(c, func(s *v1.ContainerStatus) { s.Ready = true })
		}
		if lp := c.spec.LivenessProbe; lp != nil {
			go runProbe(done, lp, w.check(c, lp, p), func(ok bool) bool {
				if !ok {
					unhealthy("liveness")
				}
				return !ok
			})
		}
	}()
}

// setProbed changes c's status unless the process has exited meanwhile.
func (w *podWorker) setProbed(c *container, f func(*v1.ContainerStatus)) {
	w.mu.Lock()
	if c.status.State.Running != nil {
		f(&c.status)
	}
	w.mu.Unlock()
	w.markDirty()
}

// runProbe runs check every period (after the initial delay) and calls report(true) after
// successThreshold successes in a row, report(false) after failureThreshold failures in a row;
// it ends when done closes or report returns true.
func runProbe(done <-chan struct{}, p *v1.Probe, check func(time.Duration) error, report func(bool) bool) {
	period := seconds(p.PeriodSeconds, 10)
	timeout := seconds(p.TimeoutSeconds, 1)
	successes, failures := max(p.SuccessThreshold, 1), p.FailureThreshold
	if failures <= 0 {
		failures = 3
	}
	delay := seconds(p.InitialDelaySeconds, 0)
	var okRun, failRun int32
	for {
		select {
		case <-done:
			return
		case <-time.After(delay):
		}
		delay = period
		if err := check(timeout); err == nil {
			okRun, failRun = okRun+1, 0
			if okRun == successes && report(true) {
				return
			}
		} else {
			okRun, failRun = 0, failRun+1
			if failRun == failures && report(false) {
				return
			}
		}
	}
}

func seconds(n int32, def int) time.Duration {
	if n <= 0 {
		return time.Duration(def) * time.Second
	}
	return time.Duration(n) * time.Second
}

// check returns the probe's action. Every pod shares the host network, so the default host
// is the pod IP 127.0.0.1. An exec probe runs in the container's mount namespace (nsenter).
func (w *podWorker) check(c *container, p *v1.Probe, proc *process) func(time.Duration) error {
	switch {
	case p.HTTPGet != nil:
		return httpCheck(p.HTTPGet, c.spec.Ports)
	case p.TCPSocket != nil:
		return func(timeout time.Duration) error {
			port, err := resolvePort(p.TCPSocket.Port, c.spec.Ports)
			if err != nil {
				return err
			}
			conn, err := net.DialTimeout("tcp", net.JoinHostPort(orDefault(p.TCPSocket.Host, podIP), port), timeout)
			if err == nil {
				conn.Close()
			}
			return err
		}
	case p.Exec != nil:
		return func(timeout time.Duration) error {
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			w.mu.Lock()
			env := c.env
			w.mu.Unlock()
			args := append([]string{"--target", strconv.Itoa(proc.pid), "--mount",
				"--setgid", strconv.Itoa(int(c.id.gid)), "--setuid", strconv.Itoa(int(c.id.uid)), "--"}, p.Exec.Command...)
			cmd := exec.CommandContext(ctx, "nsenter", args...)
			cmd.Env = env
			return cmd.Run()
		}
	}
	logf("pod %s container %s: gRPC probes are not supported, counted as successful", w.key, c.spec.Name)
	return func(time.Duration) error { return nil }
}

func httpCheck(h *v1.HTTPGetAction, ports []v1.ContainerPort) func(time.Duration) error {
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true,
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} // as the kubelet: no verification
	return func(timeout time.Duration) error {
		port, err := resolvePort(h.Port, ports)
		if err != nil {
			return err
		}
		scheme := strings.ToLower(string(orDefault(h.Scheme, v1.URISchemeHTTP)))
		path := h.Path
		if !strings.HasPrefix(path, "/") {
			path = "/" + path
		}
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet,
			scheme+"://"+net.JoinHostPort(orDefault(h.Host, podIP), port)+path, nil)
		if err != nil {
			return err
		}
		for _, hdr := range h.HTTPHeaders {
			if strings.EqualFold(hdr.Name, "Host") {
				req.Host = hdr.Value
			} else {
				req.Header.Add(hdr.Name, hdr.Value)
			}
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 10<<10))
		resp.Body.Close()
		if resp.StatusCode < 200 || resp.StatusCode >= 400 {
			return fmt.Errorf("HTTP %d", resp.StatusCode)
		}
		return nil
	}
}

// resolvePort turns a port number or a container port name into a port number.
func resolvePort(port intstr.IntOrString, ports []v1.ContainerPort) (string, error) {
	if port.Type == intstr.Int {
		return strconv.Itoa(port.IntValue()), nil
	}
	for _, p := range ports {
		if p.Name == port.StrVal {
			return strconv.Itoa(int(p.ContainerPort)), nil
		}
	}
	if n, err := strconv.Atoi(port.StrVal); err == nil {
		return strconv.Itoa(n), nil
	}
	return "", errors.New("no container port named " + port.StrVal)
}

func orDefault[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}
