package identity

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// apiServer is an HTTP server that answers GET /api/v1/pods as the
// Kubernetes API server does: a PodList, or with watch=true a stream of
// watch events (with sendInitialEvents=true the pods first, then the
// bookmark that ends them). It records the field selectors asked for.
type apiServer struct {
	*httptest.Server
	pods []corev1.Pod

	mu        sync.Mutex
	selectors []string
	watches   int
}

func newAPIServer(t *testing.T, pods ...corev1.Pod) *apiServer {
	a := &apiServer{pods: pods}
	a.Server = httptest.NewServer(http.HandlerFunc(a.serve))
	t.Cleanup(a.Close)
	return a
}

func (a *apiServer) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/api/v1/pods" {
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	q := r.URL.Query()
	a.mu.Lock()
	a.selectors = append(a.selectors, q.Get("fieldSelector"))
	a.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	if q.Get("watch") != "true" {
		list := corev1.PodList{TypeMeta: metav1.TypeMeta{Kind: "PodList", APIVersion: "v1"}, ListMeta: metav1.ListMeta{ResourceVersion: "10"}, Items: a.pods}
		json.NewEncoder(w).Encode(list)
		return
	}
	a.mu.Lock()
	a.watches++
	a.mu.Unlock()
	enc := json.NewEncoder(w)
	event := func(typ string, obj any) {
		enc.Encode(map[string]any{"type": typ, "object": obj})
		w.(http.Flusher).Flush()
	}
	if q.Get("sendInitialEvents") == "true" {
		for _, p := range a.pods {
			p.TypeMeta = metav1.TypeMeta{Kind: "Pod", APIVersion: "v1"}
			event("ADDED", p)
		}
		event("BOOKMARK", corev1.Pod{
			TypeMeta:   metav1.TypeMeta{Kind: "Pod", APIVersion: "v1"},
			ObjectMeta: metav1.ObjectMeta{ResourceVersion: "10", Annotations: map[string]string{metav1.InitialEventsAnnotationKey: "true"}},
		})
	} else {
		w.(http.Flusher).Flush()
	}
	<-r.Context().Done()
}

// TestK8sClientAgainstAPIServer: the client NewK8sClient builds from a
// kubeconfig lists and watches this node's pods over HTTP, and the
// resolver finds a pod by the UID in a peer's cgroup.
func TestK8sClientAgainstAPIServer(t *testing.T) {
	api := newAPIServer(t, *testPod("shop-7d9f", "team-a", shopUID, testNode, map[string]string{"kvsidecar.io/project": "shop"}))
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: %s
contexts:
- name: test
  context:
    cluster: test
    user: test
current-context: test
users:
- name: test
  user:
    token: not-a-secret
`, api.URL)), 0o600); err != nil {
		t.Fatal(err)
	}
	client, err := NewK8sClient(kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	proc := newProcRoot(t)
	proc.add(100, shopUID, 5000)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	k, err := NewK8s(ctx, K8sConfig{Client: client, NodeName: testNode, Proc: os.DirFS(proc.dir)})
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	got, err := k.Resolve(ctx, Peer{PID: 100, UID: 1000, GID: 1000})
	if err != nil || got != "shop" {
		t.Fatalf("Resolve = %q, %v; want shop", got, err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		api.mu.Lock()
		watches := api.watches
		api.mu.Unlock()
		if watches > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the client never watched the pods")
		}
	}
	api.mu.Lock()
	defer api.mu.Unlock()
	for _, s := range api.selectors {
		if s != "spec.nodeName="+testNode {
			t.Errorf("pods requested with field selector %q, want spec.nodeName=%s", s, testNode)
		}
	}
}
