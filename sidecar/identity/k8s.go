package identity

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
)

// Where the Kubernetes resolver takes a pod's project from.
const (
	ProjectFromLabel     = "label"     // the pod's label K8sConfig.ProjectLabel
	ProjectFromNamespace = "namespace" // the pod's namespace
)

// Defaults of K8sConfig.
const (
	// DefaultK8sProjectLabel is the pod label that names the project.
	DefaultK8sProjectLabel = "kvsidecar.io/project"
	// DefaultK8sPodWait bounds how long a connection waits for a pod the
	// watch has not delivered yet. A pod's containers start only after the
	// pod is bound to the node, and the watch delivers the binding within
	// milliseconds when the API server is healthy; two seconds covers a
	// slow API server without holding a stranger's connection for long.
	DefaultK8sPodWait = 2 * time.Second
	// DefaultK8sSyncTimeout bounds the first list of this node's pods at
	// start: a daemon that cannot list them cannot identify anyone.
	DefaultK8sSyncTimeout = 30 * time.Second
)

// K8sConfig configures the Kubernetes pod resolver.
type K8sConfig struct {
	// Client lists and watches pods of every namespace (NewK8sClient, or
	// the Pods("") of client-go's fake clientset in tests). Required.
	Client PodClient
	// NodeName is the node the daemon runs on (the NODE_NAME the Downward
	// API gives it). Only this node's pods are watched, and only they are
	// resolved. Required.
	NodeName string
	// ProjectFrom is ProjectFromLabel or ProjectFromNamespace. Default
	// ProjectFromLabel.
	ProjectFrom string
	// ProjectLabel is the pod label holding the project, with
	// ProjectFromLabel. Default DefaultK8sProjectLabel.
	ProjectLabel string
	// PodWait bounds the wait for a pod not yet seen. Default
	// DefaultK8sPodWait.
	PodWait time.Duration
	// SyncTimeout bounds the first list of pods in NewK8s. Default
	// DefaultK8sSyncTimeout.
	SyncTimeout time.Duration
	// Proc is the /proc file system the peers' cgroups and start times are
	// read from. Default os.DirFS("/proc"); tests inject a synthetic one.
	Proc fs.FS
	// Logger receives the watch's errors (a lost API server, a missing
	// permission). client-go's own messages go through klog: see KlogTo.
	// Default: no logging.
	Logger *zap.Logger
}

// WithDefaults returns c with every unset field at its default.
func (c K8sConfig) WithDefaults() K8sConfig {
	if c.ProjectFrom == "" {
		c.ProjectFrom = ProjectFromLabel
	}
	if c.ProjectLabel == "" {
		c.ProjectLabel = DefaultK8sProjectLabel
	}
	if c.PodWait == 0 {
		c.PodWait = DefaultK8sPodWait
	}
	if c.SyncTimeout == 0 {
		c.SyncTimeout = DefaultK8sSyncTimeout
	}
	if c.Proc == nil {
		c.Proc = os.DirFS("/proc")
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	return c
}

// Validate reports the first setting that cannot work.
func (c K8sConfig) Validate() error {
	switch {
	case c.Client == nil:
		return errors.New("k8s identity: no Kubernetes client")
	case c.NodeName == "":
		return errors.New("k8s identity: no node name: set NODE_NAME from the Downward API (fieldRef spec.nodeName)")
	case c.ProjectFrom != ProjectFromLabel && c.ProjectFrom != ProjectFromNamespace:
		return fmt.Errorf("k8s identity: project from %q: want %q or %q", c.ProjectFrom, ProjectFromLabel, ProjectFromNamespace)
	case c.PodWait < 0 || c.SyncTimeout < 0:
		return errors.New("k8s identity: negative wait")
	}
	return nil
}

// PodClient lists and watches pods: the part of client-go's typed
// PodInterface the resolver uses.
type PodClient interface {
	List(ctx context.Context, opts metav1.ListOptions) (*corev1.PodList, error)
	Watch(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error)
}

// NewK8sClient connects to the API server: with the kubeconfig file at
// path, or, when path is "", with the pod's service account (in-cluster).
//
// The client knows pods and nothing else. client-go's generated clientset
// registers every API group of Kubernetes when the program starts, which
// cost the daemon about 15 MiB of resident memory whatever identity source
// it ran with; a REST client with a scheme of the core group alone does
// not.
func NewK8sClient(kubeconfig string) (PodClient, error) {
	var rc *rest.Config
	var err error
	if kubeconfig == "" {
		rc, err = rest.InClusterConfig()
	} else {
		rc, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
	}
	if err != nil {
		return nil, fmt.Errorf("k8s identity: configure the API client: %w", err)
	}
	rc.UserAgent = "kvsidecar"
	scheme := runtime.NewScheme()
	if err := corev1.AddToScheme(scheme); err != nil {
		return nil, fmt.Errorf("k8s identity: register the core API group: %w", err)
	}
	rc.GroupVersion = &corev1.SchemeGroupVersion
	rc.APIPath = "/api"
	rc.NegotiatedSerializer = serializer.NewCodecFactory(scheme).WithoutConversion()
	client, err := rest.RESTClientFor(rc)
	if err != nil {
		return nil, fmt.Errorf("k8s identity: create the API client: %w", err)
	}
	return &podClient{rest: client, params: runtime.NewParameterCodec(scheme)}, nil
}

// podClient is the PodClient of NewK8sClient: GET /api/v1/pods, as a list
// or as a watch.
type podClient struct {
	rest   *rest.RESTClient
	params runtime.ParameterCodec
}

func (c *podClient) List(ctx context.Context, opts metav1.ListOptions) (*corev1.PodList, error) {
	list := &corev1.PodList{}
	err := c.rest.Get().Resource("pods").VersionedParams(&opts, c.params).Do(ctx).Into(list)
	return list, err
}

func (c *podClient) Watch(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
	opts.Watch = true
	return c.rest.Get().Resource("pods").VersionedParams(&opts, c.params).Watch(ctx)
}

// K8s resolves a peer to the project of the Kubernetes pod it runs in, as
// SPIRE's k8s workload attestor does: pid → /proc/<pid>/cgroup → pod UID →
// the pod, from a watch of this node's pods → its project label or its
// namespace. It guards against pid reuse: where the kernel gives a pidfd
// of the peer (Peer.PIDFD) it checks, after reading /proc/<pid>, that the
// process is still alive, so the pid still names it; elsewhere it compares
// the process's start time before and after.
//
// The daemon needs the host's pid namespace (hostPID: true): a peer in
// another pid namespace has pid 0 in SO_PEERCRED and is refused.
type K8s struct {
	cfg     K8sConfig
	pods    cache.SharedIndexInformer
	stop    chan struct{}
	stopped chan struct{} // closed when the informer has stopped

	mu       sync.Mutex
	changed  chan struct{} // closed and replaced each time a pod is added or updated
	watchErr error         // the last error of the list or watch, for NewK8s's message
}

var (
	_ Resolver  = (*K8s)(nil)
	_ io.Closer = (*K8s)(nil)
)

// podUIDIndex indexes pods by the UID their cgroups carry: metadata.uid,
// and for the mirror pod of a static pod, the static pod's own UID (the
// config hash the kubelet keeps in the kubernetes.io/config.mirror
// annotation), which is what its containers' cgroups name.
const podUIDIndex = "uid"

const mirrorPodAnnotation = "kubernetes.io/config.mirror"

// NewK8s starts watching the node's pods and returns once the first list
// has arrived (or fails after SyncTimeout, or when ctx ends). Close stops
// the watch.
func NewK8s(ctx context.Context, cfg K8sConfig) (*K8s, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	k := &K8s{cfg: cfg, stop: make(chan struct{}), stopped: make(chan struct{}), changed: make(chan struct{})}
	onNode := fields.OneTermEqualSelector("spec.nodeName", cfg.NodeName).String()
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.FieldSelector = onNode
			return cfg.Client.List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.FieldSelector = onNode
			return cfg.Client.Watch(ctx, o)
		},
	}
	// A client that cannot stream the initial list in a watch (client-go's
	// fake says so) is listed, then watched.
	k.pods = cache.NewSharedIndexInformer(cache.ToListWatcherWithWatchListSemantics(lw, cfg.Client), &corev1.Pod{}, 0, cache.Indexers{})
	// Keep only what resolving needs: a node's pods with their managed
	// fields and specs would cost megabytes on a busy node.
	if err := k.pods.SetTransform(trimPod); err != nil {
		return nil, fmt.Errorf("k8s identity: %w", err)
	}
	if err := k.pods.AddIndexers(cache.Indexers{podUIDIndex: podUIDs}); err != nil {
		return nil, fmt.Errorf("k8s identity: %w", err)
	}
	if _, err := k.pods.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { k.notify() },
		UpdateFunc: func(any, any) { k.notify() },
	}); err != nil {
		return nil, fmt.Errorf("k8s identity: %w", err)
	}
	if err := k.pods.SetWatchErrorHandlerWithContext(k.watchFailed); err != nil {
		return nil, fmt.Errorf("k8s identity: %w", err)
	}
	go func() {
		defer close(k.stopped)
		k.pods.Run(k.stop)
	}()
	sctx, cancel := context.WithTimeout(ctx, cfg.SyncTimeout)
	defer cancel()
	if !cache.WaitForCacheSync(sctx.Done(), k.pods.HasSynced) {
		k.Close()
		k.mu.Lock()
		last := k.watchErr
		k.mu.Unlock()
		if last == nil {
			last = fmt.Errorf("no answer within %s", cfg.SyncTimeout)
		}
		return nil, fmt.Errorf("k8s identity: list the pods of node %s: %w", cfg.NodeName, last)
	}
	return k, nil
}

// watchFailed is called each time the list or watch of pods fails; the
// informer then retries with a backoff, and resolving goes on from the
// pods it has.
func (k *K8s) watchFailed(_ context.Context, _ *cache.Reflector, err error) {
	k.mu.Lock()
	k.watchErr = err
	k.mu.Unlock()
	k.cfg.Logger.Warn("k8s identity: the list or watch of this node's pods failed; retrying", zap.String("node", k.cfg.NodeName), zap.Error(err))
}

// Close stops the watch and waits for its goroutines.
func (k *K8s) Close() error {
	select {
	case <-k.stop:
	default:
		close(k.stop)
	}
	<-k.stopped
	return nil
}

func (k *K8s) notify() {
	k.mu.Lock()
	close(k.changed)
	k.changed = make(chan struct{})
	k.mu.Unlock()
}

// MayWait reports that Resolve may wait for the pod watch (identity.Waiter).
func (k *K8s) MayWait() bool { return true }

// Resolve returns the project of the pod the peer runs in. Every refusal
// wraps ErrUnmapped and says which check failed.
func (k *K8s) Resolve(ctx context.Context, p Peer) (string, error) {
	if p.PID == 0 {
		return "", fmt.Errorf("%w: the caller's pid is 0: it runs in another pid namespace than the daemon, which needs hostPID: true to see it", ErrUnmapped)
	}
	uid, err := k.podUID(p)
	if err != nil {
		return "", err
	}
	pod, err := k.waitPod(ctx, uid)
	if err != nil {
		return "", err
	}
	if k.cfg.ProjectFrom == ProjectFromNamespace {
		return pod.Namespace, nil
	}
	project := pod.Labels[k.cfg.ProjectLabel]
	if project == "" {
		return "", fmt.Errorf("%w: pod %s/%s has no label %s", ErrUnmapped, pod.Namespace, pod.Name, k.cfg.ProjectLabel)
	}
	return project, nil
}

// podUID reads the peer's pod UID from its cgroup, checking that the pid
// still names the peer once it has been read.
func (k *K8s) podUID(p Peer) (string, error) {
	var before uint64
	if p.PIDFD == nil {
		var err error
		if before, err = startTime(k.cfg.Proc, p.PID); err != nil {
			return "", fmt.Errorf("%w: pid %d: %w", ErrUnmapped, p.PID, err)
		}
	}
	f, err := k.cfg.Proc.Open(strconv.Itoa(int(p.PID)) + "/cgroup")
	if err != nil {
		return "", fmt.Errorf("%w: read the cgroup of pid %d: %w", ErrUnmapped, p.PID, err)
	}
	uid, err := PodUIDFromCgroup(f)
	f.Close()
	if err != nil {
		return "", fmt.Errorf("%w: pid %d: %w", ErrUnmapped, p.PID, err)
	}
	if p.PIDFD != nil {
		err = pidfdAlive(p.PIDFD)
	} else {
		var after uint64
		after, err = startTime(k.cfg.Proc, p.PID)
		if err == nil && after != before {
			err = errProcessGone
		}
		if errors.Is(err, fs.ErrNotExist) {
			err = errProcessGone
		}
	}
	if err != nil {
		return "", fmt.Errorf("%w: pid %d: %w", ErrUnmapped, p.PID, err)
	}
	if uid == "" {
		return "", fmt.Errorf("%w: pid %d runs in no Kubernetes pod (its cgroup names none)", ErrUnmapped, p.PID)
	}
	return uid, nil
}

// waitPod returns this node's pod with the given UID, waiting up to
// PodWait for the watch to deliver it.
func (k *K8s) waitPod(ctx context.Context, uid string) (*corev1.Pod, error) {
	timer := time.NewTimer(k.cfg.PodWait)
	defer timer.Stop()
	for {
		k.mu.Lock()
		changed := k.changed
		k.mu.Unlock()
		if pod := k.lookup(uid); pod != nil {
			return pod, nil
		}
		select {
		case <-changed:
		case <-timer.C:
			return nil, fmt.Errorf("%w: pod %s is not a pod of node %s (waited %s for it)", ErrUnmapped, uid, k.cfg.NodeName, k.cfg.PodWait)
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: waiting for pod %s: %w", ErrUnmapped, uid, ctx.Err())
		}
	}
}

func (k *K8s) lookup(uid string) *corev1.Pod {
	objs, err := k.pods.GetIndexer().ByIndex(podUIDIndex, uid)
	if err != nil {
		return nil
	}
	for _, o := range objs {
		// The field selector already keeps other nodes' pods out; this
		// check keeps them out even if a watch ever delivered one.
		if pod, ok := o.(*corev1.Pod); ok && pod.Spec.NodeName == k.cfg.NodeName {
			return pod
		}
	}
	return nil
}

func podUIDs(obj any) ([]string, error) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return nil, nil
	}
	uids := []string{string(pod.UID)}
	if m := pod.Annotations[mirrorPodAnnotation]; m != "" {
		uids = append(uids, m)
	}
	return uids, nil
}

// trimPod keeps the fields of a pod that resolving reads.
func trimPod(obj any) (any, error) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil // a tombstone: the informer handles it
	}
	t := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name:            pod.Name,
			Namespace:       pod.Namespace,
			UID:             pod.UID,
			ResourceVersion: pod.ResourceVersion,
			Labels:          pod.Labels,
		},
		Spec: corev1.PodSpec{NodeName: pod.Spec.NodeName},
	}
	if m := pod.Annotations[mirrorPodAnnotation]; m != "" {
		t.Annotations = map[string]string{mirrorPodAnnotation: m}
	}
	return t, nil
}
