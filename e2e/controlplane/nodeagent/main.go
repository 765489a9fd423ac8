// mimeo-node-agent makes one Node of a mimeo-controlplane cluster real enough for Mimeo's
// end-to-end tests: it registers the Node and keeps it Ready, binds every unscheduled pod to it
// (the only scheduler), provisions hostPath PersistentVolumes for pending claims (the only
// provisioner), and runs each pod's containers as local processes, each in a private mount
// namespace where the pod's volumes are bind-mounted at their mountPaths (a small kubelet).
//
//	mimeo-node-agent --kubeconfig DIR/admin.kubeconfig --node NAME --root DIR/node \
//	    --image-binary mimeo=/path/to/mimeo
//
// There are no images: a container whose image name contains a --image-binary key runs the
// mapped binary, any other container runs its command on the host. See e2e/README.md.
package main

import (
	"context"
	"flag"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/workqueue"
)

// imageBinary maps images whose name contains match to a local executable.
type imageBinary struct{ match, path string }

type imageBinaries []imageBinary

func (m *imageBinaries) String() string { return fmt.Sprint(*m) }
func (m *imageBinaries) Set(v string) error {
	match, path, ok := strings.Cut(v, "=")
	if !ok || match == "" || path == "" {
		return fmt.Errorf("want NAME=PATH, got %q", v)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	*m = append(*m, imageBinary{match, abs})
	return nil
}

type agent struct {
	client   kubernetes.Interface
	node     string
	root     string
	apiHost  string // KUBERNETES_SERVICE_HOST for pods
	apiPort  string // KUBERNETES_SERVICE_PORT for pods
	binaries imageBinaries
	self     string // this executable, re-executed as the container sandbox
	started  time.Time

	pvcs corelisters.PersistentVolumeClaimLister
	pvs  corelisters.PersistentVolumeLister

	mu       sync.Mutex
	workers  map[types.UID]*podWorker // pods with containers being run by this agent process
	finished map[types.UID]bool       // pods this agent process ran to the end: never run again
	deleting map[types.UID]bool       // final deletes in flight
	stopping bool
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, time.Now().Format("15:04:05.000")+" mimeo-node-agent: "+format+"\n", args...)
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == sandboxCommand {
		os.Exit(sandboxMain(os.Args[2:]))
	}
	os.Exit(run())
}

func run() int {
	fs := flag.NewFlagSet("mimeo-node-agent", flag.ExitOnError)
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig with admin rights (required)")
	node := fs.String("node", "e2e-node", "name of the Node to register")
	root := fs.String("root", "", "state directory: pv/, pods/, logs/ (required)")
	var bins imageBinaries
	fs.Var(&bins, "image-binary", "NAME=PATH: containers whose image contains NAME run PATH (repeatable)")
	_ = fs.Parse(os.Args[1:])
	if *kubeconfig == "" || *root == "" || fs.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "usage: mimeo-node-agent --kubeconfig FILE --root DIR [--node NAME] [--image-binary NAME=PATH]...")
		fs.PrintDefaults()
		return 2
	}
	a, err := newAgent(*kubeconfig, *node, *root, bins)
	if err != nil {
		logf("%v", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := a.run(ctx); err != nil {
		logf("%v", err)
		return 1
	}
	return 0
}

func newAgent(kubeconfig, node, root string, bins imageBinaries) (*agent, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, err
	}
	cfg.QPS, cfg.Burst = 50, 100
	cfg.UserAgent = "mimeo-node-agent"
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	server, err := url.Parse(cfg.Host)
	if err != nil {
		return nil, err
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	root, err = filepath.Abs(root)
	if err != nil {
		return nil, err
	}
	for _, d := range []string{"pv", "pods", "logs"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			return nil, err
		}
	}
	port := server.Port()
	if port == "" {
		port = "443"
	}
	return &agent{client: client, node: node, root: root, apiHost: server.Hostname(), apiPort: port,
		binaries: bins, self: self, started: time.Now(),
		workers: map[types.UID]*podWorker{}, finished: map[types.UID]bool{}, deleting: map[types.UID]bool{}}, nil
}

func (a *agent) run(ctx context.Context) error {
	if err := a.registerNode(ctx); err != nil {
		return fmt.Errorf("register node %s: %w", a.node, err)
	}
	go a.keepNodeAlive(ctx)

	cluster := informers.NewSharedInformerFactory(a.client, 0)
	pvcInformer := cluster.Core().V1().PersistentVolumeClaims()
	a.pvcs = pvcInformer.Lister()
	a.pvs = cluster.Core().V1().PersistentVolumes().Lister()
	// Two pod informers, so that neither caches pods it does not care about: unscheduled live
	// pods (to bind) and the pods bound to this node (to run).
	unscheduled := informers.NewSharedInformerFactoryWithOptions(a.client, 0, informers.WithTweakListOptions(
		func(o *metav1.ListOptions) {
			o.FieldSelector = "spec.nodeName=,status.phase!=Succeeded,status.phase!=Failed"
		}))
	mine := informers.NewSharedInformerFactoryWithOptions(a.client, 0, informers.WithTweakListOptions(
		func(o *metav1.ListOptions) { o.FieldSelector = "spec.nodeName=" + a.node }))

	a.runScheduler(ctx, unscheduled.Core().V1().Pods().Informer())
	a.runProvisioner(ctx, pvcInformer)
	podInformer := mine.Core().V1().Pods().Informer()
	for _, f := range []informers.SharedInformerFactory{cluster, unscheduled, mine} {
		f.Start(ctx.Done())
	}
	// Volumes are looked up in the listers: they must be filled before the first pod runs.
	for _, f := range []informers.SharedInformerFactory{cluster, unscheduled} {
		f.WaitForCacheSync(ctx.Done())
	}
	a.runPods(ctx, podInformer)
	logf("node %s ready; root %s; API server for pods %s:%s", a.node, a.root, a.apiHost, a.apiPort)

	<-ctx.Done()
	a.shutdown()
	return nil
}

// runQueue runs fn for the keys added to a new queue until ctx ends; a failed key is retried
// with exponential backoff. It returns the queue.
func runQueue(ctx context.Context, name string, fn func(context.Context, string) error) workqueue.TypedRateLimitingInterface[string] {
	q := workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
		workqueue.TypedRateLimitingQueueConfig[string]{Name: name})
	go func() {
		<-ctx.Done()
		q.ShutDown()
	}()
	go func() {
		for {
			key, quit := q.Get()
			if quit {
				return
			}
			if err := fn(ctx, key); err != nil {
				if ctx.Err() == nil {
					logf("%s %s: %v (will retry)", name, key, err)
				}
				q.AddRateLimited(key)
			} else {
				q.Forget(key)
			}
			q.Done(key)
		}
	}()
	return q
}

// enqueue is an event handler adding the namespace/name key of added and updated objects.
func enqueue(q workqueue.TypedRateLimitingInterface[string]) cache.ResourceEventHandler {
	add := func(obj any) {
		if key, err := cache.MetaNamespaceKeyFunc(obj); err == nil {
			q.Add(key)
		}
	}
	return cache.ResourceEventHandlerFuncs{AddFunc: add, UpdateFunc: func(_, obj any) { add(obj) }}
}

// podIP is the address of every pod and of the node: all processes share the host network.
const podIP = "127.0.0.1"
