package identity

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/klog/v2"
)

const (
	testNode = "node-a"
	shopUID  = "2c48913c-b29f-11e7-9350-020968147796"
	blogUID  = "6f5d5a7a-1234-4cde-9f01-23456789abcd"
)

func testPod(name, ns, uid, node string, labels map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, UID: types.UID(uid), Labels: labels},
		Spec:       corev1.PodSpec{NodeName: node},
	}
}

// procRoot is a synthetic /proc: one directory per pid with the cgroup and
// stat files the resolver reads.
type procRoot struct {
	t   *testing.T
	dir string
}

func newProcRoot(t *testing.T) *procRoot {
	return &procRoot{t: t, dir: t.TempDir()}
}

// add gives pid a cgroup file naming the pod (systemd driver, cgroup v2)
// and a stat file with the start time.
func (p *procRoot) add(pid int32, podUID string, start uint64) {
	cgroup := "0::/user.slice/user-1000.slice/session-3.scope\n"
	if podUID != "" {
		cgroup = "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" +
			strings.ReplaceAll(podUID, "-", "_") + ".slice/cri-containerd-9bca8d63d5fa.scope\n"
	}
	p.write(pid, "cgroup", cgroup)
	p.setStart(pid, start)
}

func (p *procRoot) setStart(pid int32, start uint64) {
	// A real line, with a command name holding a space and a parenthesis.
	p.write(pid, "stat", fmt.Sprintf("%d (node worker) ) S 1 %d %d 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 %d 1000 100 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0\n", pid, pid, pid, start))
}

func (p *procRoot) write(pid int32, name, content string) {
	dir := filepath.Join(p.dir, strconv.Itoa(int(pid)))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		p.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
		p.t.Fatal(err)
	}
}

// podsOf is the resolver's PodClient over a fake clientset. The fake
// cannot stream a list in a watch, and says so, as its Clientset does, so
// the informer lists and then watches.
func podsOf(cs *fake.Clientset) PodClient {
	return fakePods{cs.CoreV1().Pods("")}
}

type fakePods struct{ PodClient }

func (fakePods) IsWatchListSemanticsUnSupported() bool { return true }

// startK8s starts a resolver over a fake clientset holding pods, and
// returns it with the clientset; watchStarted is closed once the
// informer's watch is established, so pods created after it are seen.
func startK8s(t *testing.T, cfg K8sConfig, pods ...runtime.Object) (*K8s, *fake.Clientset) {
	t.Helper()
	cs := fake.NewClientset(pods...)
	watching := make(chan struct{})
	var once atomic.Bool
	cs.PrependWatchReactor("pods", func(a k8stesting.Action) (bool, watch.Interface, error) {
		w, err := cs.Tracker().Watch(a.GetResource(), a.GetNamespace())
		if once.CompareAndSwap(false, true) {
			close(watching)
		}
		return true, w, err
	})
	cfg.Client = podsOf(cs)
	if cfg.NodeName == "" {
		cfg.NodeName = testNode
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	k, err := NewK8s(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { k.Close() })
	select {
	case <-watching:
	case <-ctx.Done():
		t.Fatal("the informer never started its watch")
	}
	return k, cs
}

func TestK8sResolve(t *testing.T) {
	proc := newProcRoot(t)
	proc.add(100, shopUID, 5000)
	proc.add(101, blogUID, 5001)
	proc.add(102, "", 5002)                                  // a process outside Kubernetes
	proc.add(103, "8dc4ec1a1e8ad8ba2f7df48cdb2cd7de", 5003)  // a static pod's container
	proc.add(104, "0f0f0f0f-1111-2222-3333-444444444444", 1) // a pod of another node
	proc.add(105, "aaaaaaaa-1111-2222-3333-444444444444", 1) // a pod nobody knows
	proc.write(106, "cgroup", "12:memory:/kubepods/pod"+shopUID+"/x\n11:pids:/kubepods/pod"+blogUID+"/x\n")
	proc.setStart(106, 7)

	mirror := testPod("etcd-node-a", "kube-system", "d1e2f3a4-0000-4000-8000-000000000001", testNode, map[string]string{"kvsidecar.io/project": "infra"})
	mirror.Annotations = map[string]string{"kubernetes.io/config.mirror": "8dc4ec1a1e8ad8ba2f7df48cdb2cd7de"}
	pods := []runtime.Object{
		testPod("shop-7d9f", "team-a", shopUID, testNode, map[string]string{"kvsidecar.io/project": "shop", "app": "shop"}),
		testPod("blog-1", "team-b", blogUID, testNode, map[string]string{"app": "blog"}),
		mirror,
		testPod("elsewhere", "team-a", "0f0f0f0f-1111-2222-3333-444444444444", "node-b", map[string]string{"kvsidecar.io/project": "shop"}),
	}

	byLabel, _ := startK8s(t, K8sConfig{Proc: os.DirFS(proc.dir), PodWait: 50 * time.Millisecond}, pods...)
	byNamespace, _ := startK8s(t, K8sConfig{Proc: os.DirFS(proc.dir), PodWait: 50 * time.Millisecond, ProjectFrom: ProjectFromNamespace}, pods...)
	byOtherLabel, _ := startK8s(t, K8sConfig{Proc: os.DirFS(proc.dir), PodWait: 50 * time.Millisecond, ProjectLabel: "app"}, pods...)

	tests := []struct {
		name    string
		k       *K8s
		pid     int32
		want    string
		wantErr string
	}{
		{name: "project from the pod label", k: byLabel, pid: 100, want: "shop"},
		{name: "project from another label", k: byOtherLabel, pid: 101, want: "blog"},
		{name: "project from the namespace", k: byNamespace, pid: 101, want: "team-b"},
		{name: "static pod through its mirror pod", k: byLabel, pid: 103, want: "infra"},
		{name: "pod without the label", k: byLabel, pid: 101, wantErr: "pod team-b/blog-1 has no label kvsidecar.io/project"},
		{name: "pid 0", k: byLabel, pid: 0, wantErr: "pid is 0: it runs in another pid namespace than the daemon, which needs hostPID: true"},
		{name: "not in a pod", k: byLabel, pid: 102, wantErr: "pid 102 runs in no Kubernetes pod"},
		{name: "pod of another node", k: byLabel, pid: 104, wantErr: "pod 0f0f0f0f-1111-2222-3333-444444444444 is not a pod of node node-a (waited 50ms for it)"},
		{name: "unknown pod", k: byLabel, pid: 105, wantErr: "pod aaaaaaaa-1111-2222-3333-444444444444 is not a pod of node node-a"},
		{name: "cgroup naming two pods", k: byLabel, pid: 106, wantErr: "pid 106: cgroup names more than one pod"},
		{name: "no such process", k: byLabel, pid: 999, wantErr: "pid 999"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.k.Resolve(context.Background(), Peer{PID: tt.pid, UID: 1000, GID: 1000})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, ErrUnmapped) {
					t.Fatalf("Resolve = %q, %v; want an ErrUnmapped containing %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("Resolve = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestK8sWatchesOnlyItsNode(t *testing.T) {
	_, cs := startK8s(t, K8sConfig{Proc: os.DirFS(t.TempDir()), NodeName: "node-7"})
	var selectors []string
	for _, a := range cs.Actions() {
		if l, ok := a.(k8stesting.ListAction); ok && a.GetResource().Resource == "pods" {
			selectors = append(selectors, l.GetListRestrictions().Fields.String())
		}
		if w, ok := a.(k8stesting.WatchAction); ok && a.GetResource().Resource == "pods" {
			selectors = append(selectors, w.GetWatchRestrictions().Fields.String())
		}
	}
	if len(selectors) < 2 {
		t.Fatalf("want a list and a watch of pods, got actions %v", cs.Actions())
	}
	for _, s := range selectors {
		if s != "spec.nodeName=node-7" {
			t.Errorf("pods requested with field selector %q, want spec.nodeName=node-7", s)
		}
	}
}

func TestK8sWaitsForANewPod(t *testing.T) {
	proc := newProcRoot(t)
	proc.add(200, shopUID, 1)
	k, cs := startK8s(t, K8sConfig{Proc: os.DirFS(proc.dir), PodWait: 10 * time.Second})

	done := make(chan error, 1)
	go func() {
		project, err := k.Resolve(context.Background(), Peer{PID: 200})
		if err == nil && project != "shop" {
			err = fmt.Errorf("project %q, want shop", project)
		}
		done <- err
	}()
	// The caller connected before the watch delivered its pod.
	time.Sleep(20 * time.Millisecond)
	pod := testPod("shop-1", "team-a", shopUID, testNode, map[string]string{"kvsidecar.io/project": "shop"})
	if _, err := cs.CoreV1().Pods("team-a").Create(context.Background(), pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Resolve did not return after the pod appeared")
	}
}

func TestK8sSeesLabelChanges(t *testing.T) {
	proc := newProcRoot(t)
	proc.add(300, shopUID, 1)
	pod := testPod("shop-1", "team-a", shopUID, testNode, map[string]string{"kvsidecar.io/project": "shop"})
	k, cs := startK8s(t, K8sConfig{Proc: os.DirFS(proc.dir), PodWait: 50 * time.Millisecond}, pod)
	if got, err := k.Resolve(context.Background(), Peer{PID: 300}); err != nil || got != "shop" {
		t.Fatalf("Resolve = %q, %v; want shop", got, err)
	}
	pod = pod.DeepCopy()
	pod.Labels["kvsidecar.io/project"] = "shop-v2"
	if _, err := cs.CoreV1().Pods("team-a").Update(context.Background(), pod, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		got, err := k.Resolve(context.Background(), Peer{PID: 300})
		if err == nil && got == "shop-v2" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the label changed, Resolve = %q, %v; want shop-v2", got, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := cs.CoreV1().Pods("team-a").Delete(context.Background(), "shop-1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	for {
		_, err := k.Resolve(context.Background(), Peer{PID: 300})
		if err != nil && strings.Contains(err.Error(), "is not a pod of node") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the pod was deleted, Resolve = %v; want a refusal", err)
		}
	}
}

// reusingFS is a synthetic /proc whose process 400 is replaced by another
// process with the same pid right after its cgroup has been read.
type reusingFS struct {
	fs.FS
	proc *procRoot
	read atomic.Bool
}

func (r *reusingFS) Open(name string) (fs.File, error) {
	f, err := r.FS.Open(name)
	if name == "400/cgroup" && err == nil && r.read.CompareAndSwap(false, true) {
		r.proc.setStart(400, 9999) // the pid now names a younger process
	}
	return f, err
}

func TestK8sRefusesAReusedPid(t *testing.T) {
	proc := newProcRoot(t)
	proc.add(400, shopUID, 1234)
	pod := testPod("shop-1", "team-a", shopUID, testNode, map[string]string{"kvsidecar.io/project": "shop"})
	rfs := &reusingFS{FS: os.DirFS(proc.dir), proc: proc}
	k, _ := startK8s(t, K8sConfig{Proc: rfs}, pod)
	_, err := k.Resolve(context.Background(), Peer{PID: 400})
	if !errors.Is(err, errProcessGone) || !errors.Is(err, ErrUnmapped) {
		t.Fatalf("Resolve of a pid reused during resolution = %v; want %v", err, errProcessGone)
	}
	// The same process, unchanged, resolves.
	proc.setStart(400, 9999)
	if got, err := k.Resolve(context.Background(), Peer{PID: 400}); err != nil || got != "shop" {
		t.Fatalf("Resolve = %q, %v; want shop", got, err)
	}
}

func TestK8sPIDFDGuard(t *testing.T) {
	child := exec.Command("sleep", "30")
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer child.Process.Kill()
	fd, err := unix.PidfdOpen(child.Process.Pid, 0)
	if err != nil {
		t.Skipf("this kernel has no pidfd (pidfd_open: %v)", err)
	}
	pidfd := os.NewFile(uintptr(fd), "pidfd")
	defer pidfd.Close()

	pid := int32(child.Process.Pid)
	proc := newProcRoot(t)
	proc.write(pid, "cgroup", "0::/kubepods/burstable/pod"+shopUID+"/x\n")
	// No stat file: with a pidfd the start time is not needed.
	pod := testPod("shop-1", "team-a", shopUID, testNode, map[string]string{"kvsidecar.io/project": "shop"})
	k, _ := startK8s(t, K8sConfig{Proc: os.DirFS(proc.dir)}, pod)

	if got, err := k.Resolve(context.Background(), Peer{PID: pid, PIDFD: pidfd}); err != nil || got != "shop" {
		t.Fatalf("Resolve of a live process = %q, %v; want shop", got, err)
	}
	child.Process.Kill()
	child.Wait()
	if _, err := k.Resolve(context.Background(), Peer{PID: pid, PIDFD: pidfd}); !errors.Is(err, errProcessGone) {
		t.Fatalf("Resolve of a process that exited = %v; want %v", err, errProcessGone)
	}
}

func TestPeerOfHoldsAPIDFD(t *testing.T) {
	dir := t.TempDir()
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(dir, "s"), Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("unix", filepath.Join(dir, "s"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sc, err := ln.AcceptUnix()
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	p, err := PeerOf(sc)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Release()
	if p.PID != int32(os.Getpid()) {
		t.Fatalf("peer pid %d, want %d", p.PID, os.Getpid())
	}
	if p.PIDFD == nil {
		var uts unix.Utsname
		unix.Uname(&uts)
		t.Skipf("kernel %s has no SO_PEERPIDFD (Linux 6.5 and later)", unix.ByteSliceToString(uts.Release[:]))
	}
	if err := pidfdAlive(p.PIDFD); err != nil {
		t.Fatalf("the peer's pidfd says %v; it is this live process", err)
	}
}

func TestK8sConfigErrors(t *testing.T) {
	cs := fake.NewClientset()
	tests := []struct {
		cfg  K8sConfig
		want string
	}{
		{K8sConfig{NodeName: "n"}, "no Kubernetes client"},
		{K8sConfig{Client: podsOf(cs)}, "no node name: set NODE_NAME"},
		{K8sConfig{Client: podsOf(cs), NodeName: "n", ProjectFrom: "annotation"}, `project from "annotation": want "label" or "namespace"`},
	}
	for _, tt := range tests {
		_, err := NewK8s(context.Background(), tt.cfg)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("NewK8s(%+v) = %v; want an error containing %q", tt.cfg, err, tt.want)
		}
	}
}

// TestK8sListRefused: a service account that may not list pods makes the
// start fail with the API server's answer, logged through the daemon's
// logger.
func TestK8sListRefused(t *testing.T) {
	cs := fake.NewClientset()
	cs.PrependReactor("list", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "pods"}, "", errors.New(`User "system:serviceaccount:kvsidecar:kvsidecar" cannot list resource "pods"`))
	})
	core, logs := observer.New(zap.InfoLevel)
	_, err := NewK8s(context.Background(), K8sConfig{Client: podsOf(cs), NodeName: testNode, SyncTimeout: 500 * time.Millisecond, Logger: zap.New(core)})
	if err == nil || !strings.Contains(err.Error(), "list the pods of node node-a") || !strings.Contains(err.Error(), "cannot list resource") {
		t.Fatalf("NewK8s = %v; want the refusal to list pods", err)
	}
	if got := logs.FilterMessageSnippet("list or watch of this node's pods failed").Len(); got == 0 {
		t.Errorf("the failed list was not logged; logs: %v", logs.All())
	}
}

// TestKlogTo: client-go's klog messages reach the daemon's logger, with
// their key-value pairs and errors. No informer runs here (klog's logger
// may not change while one does).
func TestKlogTo(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	KlogTo(zap.New(core))
	defer klog.ClearLogger()
	klog.InfoS("from client-go", "k", "v")
	klog.ErrorS(errors.New("boom"), "failed", "resource", "pods")
	klog.V(4).InfoS("debugging chatter")
	if got := logs.FilterMessage("from client-go").All(); len(got) != 1 || got[0].ContextMap()["k"] != "v" {
		t.Errorf("klog info: %v", got)
	}
	if got := logs.FilterMessage("failed").All(); len(got) != 1 || got[0].Level != zap.ErrorLevel || got[0].ContextMap()["error"] != "boom" {
		t.Errorf("klog error: %v", got)
	}
	if logs.Len() != 2 {
		t.Errorf("want klog's level 0 only, got %v", logs.All())
	}
}
