// mimeo-controlplane runs a small Kubernetes control plane for Mimeo's end-to-end tests:
// etcd (embedded, in this process), kube-apiserver and kube-controller-manager (each a
// child process: this same binary re-executed with a subcommand).
//
//	mimeo-controlplane --data-dir DIR --port N
//
// It also writes DIR/env (KUBECONFIG=..., MIMEO_E2E_APISERVER=https://ADDRESS:N) and
// DIR/controlplane.pid. It writes DIR/admin.kubeconfig once the API server's /readyz answers ok and the
// controller-manager has created the default ServiceAccount, then prints "ready" on
// stdout. Component logs go to DIR/*.log. SIGTERM or SIGINT stops everything in order
// (controller-manager, API server, etcd). If the API server dies the whole control plane
// exits non-zero; the controller-manager is restarted a few times if it dies.
//
// Subcommands (used by the re-exec, also usable by hand):
//
//	mimeo-controlplane kube-apiserver [kube-apiserver flags]
//	mimeo-controlplane kube-controller-manager [kube-controller-manager flags]
//	mimeo-controlplane kube-scheduler [kube-scheduler flags]
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
	_ "time/tzdata" // CronJob time zones

	"go.etcd.io/etcd/server/v3/embed"
	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	apiserverapp "k8s.io/kubernetes/cmd/kube-apiserver/app"
	cmapp "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	schedapp "k8s.io/kubernetes/cmd/kube-scheduler/app"
)

const (
	serviceCIDR = "10.0.0.0/24"
	serviceIP   = "10.0.0.1" // first address of serviceCIDR: the "kubernetes" Service
	issuer      = "https://kubernetes.default.svc.cluster.local"
)

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, " ") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "kube-apiserver":
			cmd := apiserverapp.NewAPIServerCommand()
			cmd.SetArgs(os.Args[2:])
			os.Exit(cli.Run(cmd))
		case "kube-controller-manager":
			cmd := cmapp.NewControllerManagerCommand()
			cmd.SetArgs(os.Args[2:])
			os.Exit(cli.Run(cmd))
		case "kube-scheduler":
			cmd := schedapp.NewSchedulerCommand()
			cmd.SetArgs(os.Args[2:])
			os.Exit(cli.Run(cmd))
		}
	}
	os.Exit(run())
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "mimeo-controlplane: "+format+"\n", args...)
}

func run() int {
	fs := flag.NewFlagSet("mimeo-controlplane", flag.ExitOnError)
	dataDir := fs.String("data-dir", "", "directory for etcd data, certificates, kubeconfigs and logs (required)")
	port := fs.Int("port", 6443, "kube-apiserver secure port (0: pick a free one)")
	address := fs.String("address", "127.0.0.1", "the API server's address: it listens there, and advertises it as the kubernetes Service's endpoint when it is not a loopback address (a node's pods reach it there)")
	etcdPort := fs.Int("etcd-port", 0, "etcd client port on 127.0.0.1 (0: pick a free one)")
	noFsync := fs.Bool("etcd-unsafe-no-fsync", true, "skip etcd's fsync: fast on a busy disk, but writes acknowledged just before a shutdown can be lost (pass false when the control plane is restarted on its data)")
	readyTimeout := fs.Duration("ready-timeout", 5*time.Minute, "give up if not ready within this time")
	var apiArgs, cmArgs, nodes multiFlag
	fs.Var(&apiArgs, "apiserver-arg", "extra kube-apiserver flag, e.g. --apiserver-arg=--v=2 (repeatable)")
	fs.Var(&cmArgs, "controller-manager-arg", "extra kube-controller-manager flag (repeatable)")
	fs.Var(&nodes, "node", "also write DIR/node-NAME.kubeconfig for user system:node:NAME (repeatable), and DIR/kube-proxy.kubeconfig")
	scheduler := fs.Bool("scheduler", false, "also run kube-scheduler (for real kubelets; the node agent schedules its own pods)")
	_ = fs.Parse(os.Args[1:])
	if *dataDir == "" || fs.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "usage: mimeo-controlplane --data-dir DIR [--port N] [flags]")
		fs.PrintDefaults()
		return 2
	}
	dir, err := filepath.Abs(*dataDir)
	if err != nil {
		logf("%v", err)
		return 1
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		logf("%v", err)
		return 1
	}
	if *port == 0 {
		if *port, err = freePort(); err != nil {
			logf("%v", err)
			return 1
		}
	}
	addr := net.ParseIP(*address)
	if addr == nil {
		logf("--address %q is not an IP address", *address)
		return 2
	}
	cp := &controlPlane{dir: dir, pki: pki{dir: filepath.Join(dir, "pki")}, addr: addr, port: *port, noFsync: *noFsync,
		apiArgs: apiArgs, cmArgs: cmArgs, nodes: nodes, scheduler: *scheduler}
	if *etcdPort != 0 {
		cp.etcdPort = *etcdPort
	}

	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	code := cp.serve(sigs, *readyTimeout)
	cp.shutdown()
	return code
}

type controlPlane struct {
	dir      string
	pki      pki
	addr     net.IP
	port     int
	etcdPort int
	noFsync  bool
	apiArgs  []string
	cmArgs   []string
	nodes    []string

	etcd      *embed.Etcd
	apiserver *child
	cm        *child
	sched     *child // with --scheduler only
	scheduler bool
}

type child struct {
	name string
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
	err  error
}

func (cp *controlPlane) server() string {
	return "https://" + net.JoinHostPort(cp.addr.String(), strconv.Itoa(cp.port))
}

func (cp *controlPlane) serve(sigs <-chan os.Signal, readyTimeout time.Duration) int {
	start := time.Now()
	if err := ensurePKI(cp.pki, cp.addr); err != nil {
		logf("certificates: %v", err)
		return 1
	}
	// A stale admin.kubeconfig must not make a waiting client believe we are ready.
	_ = os.Remove(filepath.Join(cp.dir, "admin.kubeconfig"))
	if err := cp.startEtcd(); err != nil {
		logf("etcd: %v", err)
		return 1
	}
	logf("etcd ready on 127.0.0.1:%d after %s", cp.etcdPort, since(start))

	if err := writeKubeconfig(cp.pki, filepath.Join(cp.dir, "controller-manager.kubeconfig"),
		cp.server(), "controller-manager"); err != nil {
		logf("kubeconfig: %v", err)
		return 1
	}
	var err error
	if cp.apiserver, err = cp.startChild("kube-apiserver", cp.apiserverFlags()); err != nil {
		logf("start kube-apiserver: %v", err)
		return 1
	}
	client, err := cp.httpClient()
	if err != nil {
		logf("%v", err)
		return 1
	}
	deadline := time.After(readyTimeout)
	if code, ok := cp.waitFor(sigs, deadline, func() bool { return get(client, cp.server()+"/readyz") == 200 }); !ok {
		logf("kube-apiserver not ready; see %s", cp.logPath("kube-apiserver"))
		return code
	}
	logf("kube-apiserver ready on %s after %s", cp.server(), since(start))

	cp.cm, err = cp.startChild("kube-controller-manager", cp.cmFlags())
	if err != nil {
		logf("start kube-controller-manager: %v", err)
		return 1
	}
	if cp.scheduler {
		if err := writeKubeconfig(cp.pki, filepath.Join(cp.dir, "scheduler.kubeconfig"), cp.server(), "scheduler"); err != nil {
			logf("kubeconfig: %v", err)
			return 1
		}
		if cp.sched, err = cp.startChild("kube-scheduler", cp.schedulerFlags()); err != nil {
			logf("start kube-scheduler: %v", err)
			return 1
		}
	}
	saURL := cp.server() + "/api/v1/namespaces/default/serviceaccounts/default"
	if code, ok := cp.waitFor(sigs, deadline, func() bool { return get(client, saURL) == 200 }); !ok {
		logf("kube-controller-manager did not create the default ServiceAccount; see %s",
			cp.logPath("kube-controller-manager"))
		return code
	}
	logf("kube-controller-manager running after %s", since(start))

	for _, n := range cp.nodes {
		name := "node-" + n
		if err := issueClient(cp.pki, name, "system:node:"+n, "system:nodes"); err != nil {
			logf("node cert: %v", err)
			return 1
		}
		if err := writeKubeconfig(cp.pki, filepath.Join(cp.dir, name+".kubeconfig"), cp.server(), name); err != nil {
			logf("kubeconfig: %v", err)
			return 1
		}
	}
	if len(cp.nodes) > 0 {
		if err := writeKubeconfig(cp.pki, filepath.Join(cp.dir, "kube-proxy.kubeconfig"), cp.server(), "kube-proxy"); err != nil {
			logf("kubeconfig: %v", err)
			return 1
		}
	}
	if err := writeKubeconfig(cp.pki, filepath.Join(cp.dir, "admin.kubeconfig"), cp.server(), "admin"); err != nil {
		logf("kubeconfig: %v", err)
		return 1
	}
	env := fmt.Sprintf("KUBECONFIG=%s\nMIMEO_E2E_APISERVER=%s\nMIMEO_E2E_CA=%s\nMIMEO_E2E_ADMIN_TOKEN_FILE=%s\n",
		filepath.Join(cp.dir, "admin.kubeconfig"), cp.server(), cp.pki.CACert(), cp.pki.AdminToken())
	_ = os.WriteFile(filepath.Join(cp.dir, "env"), []byte(env), 0o644)
	_ = os.WriteFile(filepath.Join(cp.dir, "controlplane.pid"), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644)
	logf("ready after %s; KUBECONFIG=%s", since(start), filepath.Join(cp.dir, "admin.kubeconfig"))
	fmt.Println("ready")

	restarts := map[string]int{}
	for {
		var schedDone <-chan struct{} // nil (never ready) without a scheduler
		if cp.sched != nil {
			schedDone = cp.sched.done
		}
		select {
		case s := <-sigs:
			logf("got %v, shutting down", s)
			return 0
		case err := <-cp.etcd.Err():
			logf("etcd failed: %v", err)
			return 1
		case <-cp.apiserver.done:
			logf("kube-apiserver exited unexpectedly (%v); see %s", cp.apiserver.err, cp.logPath("kube-apiserver"))
			return 1
		case <-cp.cm.done:
			if !cp.restart(&cp.cm, "kube-controller-manager", cp.cmFlags(), restarts) {
				return 1
			}
		case <-schedDone:
			if !cp.restart(&cp.sched, "kube-scheduler", cp.schedulerFlags(), restarts) {
				return 1
			}
		}
	}
}

// restart starts a controller again after it died, up to 5 times each.
func (cp *controlPlane) restart(c **child, name string, flags []string, restarts map[string]int) bool {
	restarts[name]++
	logf("%s exited unexpectedly (%v); see %s", name, (*c).err, cp.logPath(name))
	if restarts[name] > 5 {
		return false
	}
	time.Sleep(time.Second)
	var err error
	if *c, err = cp.startChild(name, flags); err != nil {
		logf("restart %s: %v", name, err)
		return false
	}
	logf("%s restarted (%d)", name, restarts[name])
	return true
}

// waitFor polls cond until it holds, a signal arrives, the deadline passes, or a child dies.
func (cp *controlPlane) waitFor(sigs <-chan os.Signal, deadline <-chan time.Time, cond func() bool) (int, bool) {
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		if cond() {
			return 0, true
		}
		var cmDone <-chan struct{}
		if cp.cm != nil {
			cmDone = cp.cm.done
		}
		select {
		case s := <-sigs:
			logf("got %v before ready, shutting down", s)
			return 1, false
		case <-deadline:
			logf("timed out")
			return 1, false
		case err := <-cp.etcd.Err():
			logf("etcd failed: %v", err)
			return 1, false
		case <-cp.apiserver.done:
			logf("kube-apiserver exited (%v)", cp.apiserver.err)
			return 1, false
		case <-cmDone:
			logf("kube-controller-manager exited (%v)", cp.cm.err)
			return 1, false
		case <-tick.C:
		}
	}
}

func since(t time.Time) time.Duration { return time.Since(t).Round(10 * time.Millisecond) }

func (cp *controlPlane) logPath(name string) string { return filepath.Join(cp.dir, name+".log") }

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func (cp *controlPlane) startEtcd() error {
	var err error
	if cp.etcdPort == 0 {
		if cp.etcdPort, err = freePort(); err != nil {
			return err
		}
	}
	peerPort, err := freePort()
	if err != nil {
		return err
	}
	cfg := embed.NewConfig()
	cfg.Name = "mimeo-e2e"
	cfg.Dir = filepath.Join(cp.dir, "etcd")
	client := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", cp.etcdPort)}
	peer := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", peerPort)}
	cfg.ListenClientUrls = []url.URL{client}
	cfg.AdvertiseClientUrls = []url.URL{client}
	cfg.ListenPeerUrls = []url.URL{peer}
	cfg.AdvertisePeerUrls = []url.URL{peer}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.LogLevel = "error"
	cfg.LogOutputs = []string{cp.logPath("etcd")}
	// Test data only: skipping fsync makes etcd fast on a busy disk. A crash loses the
	// cluster state, which a test run never reuses, and so can a restart (--etcd-unsafe-no-fsync).
	cfg.UnsafeNoFsync = cp.noFsync
	cfg.QuotaBackendBytes = 2 << 30
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return err
	}
	cp.etcd = e
	select {
	case <-e.Server.ReadyNotify():
		return nil
	case err := <-e.Err():
		return err
	case <-time.After(60 * time.Second):
		return errors.New("etcd not ready within 60s")
	}
}

func (cp *controlPlane) apiserverFlags() []string {
	p := cp.pki
	// A loopback address cannot be an endpoint of the kubernetes Service: without a node
	// nothing needs one.
	reconciler := "lease"
	if cp.addr.IsLoopback() {
		reconciler = "none"
	}
	args := []string{
		"--etcd-servers=" + fmt.Sprintf("http://127.0.0.1:%d", cp.etcdPort),
		"--bind-address=" + cp.addr.String(),
		"--advertise-address=" + cp.addr.String(),
		"--secure-port=" + strconv.Itoa(cp.port),
		"--cert-dir=" + p.dir,
		"--tls-cert-file=" + p.ServingCert(),
		"--tls-private-key-file=" + p.ServingKey(),
		"--client-ca-file=" + p.CACert(),
		"--token-auth-file=" + p.TokenFile(),
		"--service-cluster-ip-range=" + serviceCIDR,
		"--service-account-issuer=" + issuer,
		"--service-account-key-file=" + p.SAPub(),
		"--service-account-signing-key-file=" + p.SAKey(),
		"--authorization-mode=Node,RBAC",
		"--endpoint-reconciler-type=" + reconciler,
		// Logs, exec and port-forward: the API server calls the kubelet as a node admin.
		"--kubelet-client-certificate=" + p.clientCert("apiserver-kubelet-client"),
		"--kubelet-client-key=" + p.clientKey("apiserver-kubelet-client"),
		"--kubelet-preferred-address-types=InternalIP,Hostname",
		// Added to the default-on set (NamespaceLifecycle, LimitRanger, ServiceAccount,
		// PodSecurity, ResourceQuota, DefaultStorageClass, the webhook and policy plugins, ...).
		"--enable-admission-plugins=NamespaceLifecycle,ServiceAccount,PodSecurity,LimitRanger,ResourceQuota,NodeRestriction",
		"--allow-privileged=true", // as kubeadm does: PodSecurity is the gate
		"--profiling=false",
	}
	return append(args, cp.apiArgs...)
}

func (cp *controlPlane) cmFlags() []string {
	p := cp.pki
	args := []string{
		"--kubeconfig=" + filepath.Join(cp.dir, "controller-manager.kubeconfig"),
		"--service-account-private-key-file=" + p.SAKey(),
		"--root-ca-file=" + p.CACert(),
		"--use-service-account-credentials=true",
		"--controllers=*", // the default set: job, garbagecollector, serviceaccount-token, namespace, ttl-after-finished, ...
		"--leader-elect=false",
		"--secure-port=0", // no health endpoint; several control planes can run side by side
		"--cluster-name=mimeo-e2e",
		"--cluster-signing-cert-file=" + p.CACert(),
		"--cluster-signing-key-file=" + p.CAKey(),
		"--profiling=false",
	}
	return append(args, cp.cmArgs...)
}

func (cp *controlPlane) schedulerFlags() []string {
	return []string{
		"--kubeconfig=" + filepath.Join(cp.dir, "scheduler.kubeconfig"),
		"--authentication-kubeconfig=" + filepath.Join(cp.dir, "scheduler.kubeconfig"),
		"--authorization-kubeconfig=" + filepath.Join(cp.dir, "scheduler.kubeconfig"),
		"--leader-elect=false",
		"--secure-port=0",
		"--profiling=false",
	}
}

func (cp *controlPlane) startChild(name string, args []string) (*child, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	logFile, err := os.OpenFile(cp.logPath(name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, append([]string{name}, args...)...)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.Dir = cp.dir
	// Own process group: a terminal's Ctrl-C reaches only us, and we stop the children in
	// order. Pdeathsig: the children die with us even if we are SIGKILLed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, err
	}
	c := &child{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		logFile.Close()
		close(c.done)
	}()
	logf("started %s (pid %d), log %s", name, cmd.Process.Pid, cp.logPath(name))
	return c, nil
}

func (c *child) stop(grace time.Duration) {
	if c == nil {
		return
	}
	select {
	case <-c.done:
		return
	default:
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(grace):
		logf("%s did not stop within %s, killing", c.name, grace)
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}

func (cp *controlPlane) shutdown() {
	cp.sched.stop(10 * time.Second)
	cp.cm.stop(10 * time.Second)
	// With a node the API server holds its shutdown for 20 s (its lease endpoint reconciler
	// waits to remove its endpoint); nothing of the tests' needs that drain.
	cp.apiserver.stop(10 * time.Second)
	if cp.etcd != nil {
		cp.etcd.Close()
	}
	_ = os.Remove(filepath.Join(cp.dir, "controlplane.pid"))
	logf("stopped")
}

func (cp *controlPlane) httpClient() (*http.Client, error) {
	caPEM, err := os.ReadFile(cp.pki.CACert())
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	cert, err := tls.LoadX509KeyPair(cp.pki.clientCert("admin"), cp.pki.clientKey("admin"))
	if err != nil {
		return nil, err
	}
	return &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{
			RootCAs: pool, Certificates: []tls.Certificate{cert}}},
	}, nil
}

func get(c *http.Client, u string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	resp, err := c.Do(req)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}
