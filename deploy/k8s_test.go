package deploy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"

	"github.com/kvsidecar/kvsidecar/store/postgres"
)

// The names the manifests, the image and the scrape configs agree on.
const (
	daemonImage     = "kvsidecar/kvsidecar"
	metricsPortName = "kv-metrics"
	metricsPort     = 9477
	projectLabel    = "kvsidecar.io/project"
)

// strictDecoder decodes YAML into the Kubernetes API types (and the
// Prometheus Operator's), failing on any field the types do not have and
// on duplicated fields: a typo in a manifest is an error here, not a
// setting the API server silently drops.
func strictDecoder(t *testing.T) runtime.Decoder {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	if err := monitoringv1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	return serializer.NewCodecFactory(scheme, serializer.EnableStrict).UniversalDeserializer()
}

// decodeAll splits a multi-document YAML stream and decodes each document
// strictly.
func decodeAll(t *testing.T, dec runtime.Decoder, name string, data []byte) []runtime.Object {
	t.Helper()
	var objs []runtime.Object
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(bytes.TrimSpace(stripComments(doc))) == 0 {
			continue
		}
		obj, gvk, err := dec.Decode(doc, nil, nil)
		if err != nil {
			t.Errorf("%s: strict decoding: %v", name, err)
			continue
		}
		if gvk.Version == "" || gvk.Kind == "" {
			t.Errorf("%s: a document without apiVersion or kind", name)
		}
		objs = append(objs, obj)
	}
	return objs
}

func stripComments(doc []byte) []byte {
	var out []byte
	for _, line := range bytes.Split(doc, []byte("\n")) {
		if !bytes.HasPrefix(bytes.TrimSpace(line), []byte("#")) {
			out = append(out, line...)
			out = append(out, '\n')
		}
	}
	return out
}

// overlays returns every directory under deploy/ with a kustomization.yaml,
// relative to the repository's root.
func overlays(t *testing.T) []string {
	t.Helper()
	root := repoRoot(t)
	var dirs []string
	err := filepath.WalkDir(filepath.Join(root, "deploy"), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Name() == "kustomization.yaml" {
			rel, _ := filepath.Rel(root, filepath.Dir(p))
			dirs = append(dirs, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(dirs)
	return dirs
}

var (
	renderOnce sync.Once
	renderOut  map[string][]byte // overlay -> kubectl kustomize output
	renderErr  error
)

// render runs kubectl kustomize on every overlay (once per test binary)
// and decodes what it prints, strictly.
func render(t *testing.T) map[string][]runtime.Object {
	t.Helper()
	kubectl := requireTool(t, "kubectl", "kubectl, whose kustomize renders the overlays")
	renderOnce.Do(func() {
		renderOut = map[string][]byte{}
		for _, dir := range overlays(t) {
			cmd := exec.Command(kubectl, "kustomize", dir)
			cmd.Dir = repoRoot(t)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			yml, err := cmd.Output()
			if err != nil {
				renderErr = fmt.Errorf("kubectl kustomize %s: %v\n%s", dir, err, stderr.String())
				return
			}
			renderOut[dir] = yml
		}
	})
	if renderErr != nil {
		t.Fatal(renderErr)
	}
	dec := strictDecoder(t)
	out := map[string][]runtime.Object{}
	for dir, yml := range renderOut {
		out[dir] = decodeAll(t, dec, "kubectl kustomize "+dir, yml)
	}
	return out
}

// TestManifestsDecodeStrictly decodes every YAML file under deploy/k8s and
// deploy/prometheus that is a manifest, and checks each is part of an
// overlay: a file no kustomization lists is never applied.
func TestManifestsDecodeStrictly(t *testing.T) {
	root := repoRoot(t)
	dec := strictDecoder(t)
	listed := map[string]bool{}
	for _, dir := range overlays(t) {
		var k struct {
			Resources []string `json:"resources"`
		}
		data, err := os.ReadFile(filepath.Join(root, dir, "kustomization.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		// kubectl kustomize checks the kustomization's own fields.
		if err := yaml.Unmarshal(data, &k); err != nil {
			t.Fatalf("%s/kustomization.yaml: %v", dir, err)
		}
		for _, r := range k.Resources {
			listed[path.Join(dir, r)] = true
		}
	}
	var manifests int
	for _, sub := range []string{"deploy/k8s", "deploy/prometheus"} {
		err := filepath.WalkDir(filepath.Join(root, sub), func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(p, ".yaml") || d.Name() == "kustomization.yaml" {
				return err
			}
			rel, _ := filepath.Rel(root, p)
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			if objs := decodeAll(t, dec, rel, data); len(objs) == 0 {
				t.Errorf("%s holds no manifest", rel)
			}
			if !listed[rel] {
				t.Errorf("%s is not listed in any kustomization.yaml", rel)
			}
			manifests++
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if manifests < 8 {
		t.Fatalf("decoded %d manifest files; the deployment has more", manifests)
	}
}

// podSpecs returns the pod templates of an overlay's workloads by name.
func podSpecs(objs []runtime.Object) map[string]*corev1.PodTemplateSpec {
	specs := map[string]*corev1.PodTemplateSpec{}
	for _, o := range objs {
		switch w := o.(type) {
		case *appsv1.Deployment:
			specs["Deployment/"+w.Name] = &w.Spec.Template
		case *appsv1.DaemonSet:
			specs["DaemonSet/"+w.Name] = &w.Spec.Template
		}
	}
	return specs
}

func find[T runtime.Object](objs []runtime.Object) []T {
	var out []T
	for _, o := range objs {
		if v, ok := o.(T); ok {
			out = append(out, v)
		}
	}
	return out
}

func allContainers(s *corev1.PodSpec) []corev1.Container {
	return append(slices.Clone(s.InitContainers), s.Containers...)
}

func isDaemon(c corev1.Container) bool {
	return strings.HasPrefix(c.Image, daemonImage+":")
}

func envOf(c corev1.Container, name string) *corev1.EnvVar {
	for i := range c.Env {
		if c.Env[i].Name == name {
			return &c.Env[i]
		}
	}
	return nil
}

// mountFor returns the volume mounted at dir in c, or "".
func mountFor(c corev1.Container, dir string) (volume string, readOnly bool) {
	for _, m := range c.VolumeMounts {
		if m.MountPath == dir {
			return m.Name, m.ReadOnly
		}
	}
	return "", false
}

func volume(s *corev1.PodSpec, name string) *corev1.Volume {
	for i := range s.Volumes {
		if s.Volumes[i].Name == name {
			return &s.Volumes[i]
		}
	}
	return nil
}

var pinnedTag = regexp.MustCompile(`^[a-z0-9./-]+:[0-9]+\.[0-9]+\.[0-9]+[a-z0-9.-]*$`)

// TestManifestInvariants checks what every rendered workload must hold, in
// every overlay.
func TestManifestInvariants(t *testing.T) {
	rendered := render(t)
	if len(rendered) < 5 {
		t.Fatalf("rendered %d overlays (%v); want sidecar, daemonset, its example function, admin and prometheus", len(rendered), overlays(t))
	}
	for dir, objs := range rendered {
		for name, tmpl := range podSpecs(objs) {
			s := &tmpl.Spec
			where := dir + " " + name
			if s.SecurityContext == nil || s.SecurityContext.SeccompProfile == nil || s.SecurityContext.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
				t.Errorf("%s: want the RuntimeDefault seccomp profile", where)
			}
			podNonRoot := s.SecurityContext != nil && s.SecurityContext.RunAsNonRoot != nil && *s.SecurityContext.RunAsNonRoot
			for _, c := range allContainers(s) {
				cw := where + " container " + c.Name
				if !pinnedTag.MatchString(c.Image) {
					t.Errorf("%s: image %q is not pinned by a version tag", cw, c.Image)
				}
				sc := c.SecurityContext
				if sc == nil {
					t.Errorf("%s: no securityContext", cw)
					continue
				}
				if sc.Privileged != nil && *sc.Privileged {
					t.Errorf("%s is privileged", cw)
				}
				if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
					t.Errorf("%s: want allowPrivilegeEscalation: false", cw)
				}
				if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
					t.Errorf("%s: want readOnlyRootFilesystem: true", cw)
				}
				if sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
					t.Errorf("%s: want capabilities drop [ALL]", cw)
				}
				nonRoot := podNonRoot
				if sc.RunAsNonRoot != nil {
					nonRoot = *sc.RunAsNonRoot
				}
				// One exception, by name: the DaemonSet's init container
				// that hands the hostPath directory to the daemon's uid.
				if c.Name == "socket-dir" && name == "DaemonSet/kvsidecar" {
					if sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Add, []corev1.Capability{"CHOWN"}) {
						t.Errorf("%s: runs as root, so it may add CHOWN and nothing else", cw)
					}
				} else {
					if !nonRoot {
						t.Errorf("%s: want runAsNonRoot", cw)
					}
					if sc.Capabilities != nil && len(sc.Capabilities.Add) > 0 {
						t.Errorf("%s adds capabilities %v", cw, sc.Capabilities.Add)
					}
				}
				if c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
					t.Errorf("%s: want memory requests and limits", cw)
				}
				if isDaemon(c) {
					checkDaemonContainer(t, cw, c)
				}
			}
		}
	}
}

// checkDaemonContainer checks the metrics port and the probes of a
// kvsidecar container.
func checkDaemonContainer(t *testing.T, where string, c corev1.Container) {
	t.Helper()
	var port *corev1.ContainerPort
	for i := range c.Ports {
		if c.Ports[i].Name == metricsPortName {
			port = &c.Ports[i]
		}
	}
	if port == nil || port.ContainerPort != metricsPort {
		t.Errorf("%s: want port %s = %d (the scrape configs keep pods by that name)", where, metricsPortName, metricsPort)
	}
	if e := envOf(c, "KV_METRICS_ADDR"); e != nil && e.Value != ":9477" {
		t.Errorf("%s: KV_METRICS_ADDR=%q but the port is %d", where, e.Value, metricsPort)
	}
	for _, p := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{
		{"startupProbe", c.StartupProbe, "/readyz"},
		{"readinessProbe", c.ReadinessProbe, "/readyz"},
		{"livenessProbe", c.LivenessProbe, "/healthz"},
	} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("%s: want an HTTP %s on %s", where, p.name, p.path)
			continue
		}
		if p.probe.HTTPGet.Path != p.path || p.probe.HTTPGet.Port.String() != metricsPortName {
			t.Errorf("%s: %s is GET %s on port %s; want %s on %s", where, p.name, p.probe.HTTPGet.Path, p.probe.HTTPGet.Port.String(), p.path, metricsPortName)
		}
	}
	if e := envOf(c, "KV_POSTGRES_DSN"); e == nil || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
		t.Errorf("%s: want KV_POSTGRES_DSN from a Secret", where)
	}
	for _, a := range c.Args {
		if strings.Contains(a, "postgres://") {
			t.Errorf("%s: a DSN in the arguments (%q) is visible in the process list", where, a)
		}
	}
}

// daemonSettings reads the daemon's flags and environment variables from
// README.md's settings table, which a test of internal/daemon keeps equal
// to the daemon's own table.
func daemonSettings(t *testing.T) (flags, envs map[string]bool) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot(t), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	flags, envs = map[string]bool{}, map[string]bool{}
	row := regexp.MustCompile("(?m)^\\| `--([a-z0-9-]+)` \\| `([A-Z0-9_]+)` \\|")
	for _, m := range row.FindAllStringSubmatch(string(data), -1) {
		flags[m[1]], envs[m[2]] = true, true
	}
	if len(flags) < 10 {
		t.Fatalf("README.md's settings table has %d rows", len(flags))
	}
	return flags, envs
}

// TestManifestsUseRealSettings checks every flag and environment variable
// the manifests give a kvsidecar container against the daemon's settings:
// a misspelt one would stop the daemon at start, or be ignored.
func TestManifestsUseRealSettings(t *testing.T) {
	flags, envs := daemonSettings(t)
	n := 0
	for dir, objs := range render(t) {
		for name, tmpl := range podSpecs(objs) {
			for _, c := range allContainers(&tmpl.Spec) {
				if !isDaemon(c) {
					continue
				}
				n++
				for _, a := range c.Args {
					if !strings.HasPrefix(a, "--") {
						continue // the value of the flag before
					}
					f, _, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
					if !flags[f] {
						t.Errorf("%s %s: --%s is not a kvsidecar flag", dir, name, f)
					}
				}
				for _, e := range c.Env {
					if !envs[e.Name] {
						t.Errorf("%s %s: %s is not a kvsidecar environment variable", dir, name, e.Name)
					}
				}
			}
		}
	}
	if n < 3 {
		t.Fatalf("found %d kvsidecar containers; want the sidecar, the DaemonSet's and the admin's", n)
	}
}

// TestManifestsPoolIsLargeEnough checks every daemon container's
// PostgreSQL pool size against the least the daemon starts with (one
// connection per committer, one for the reader — two with a second read
// round — and one for the sweeper): a manifest below it ships a daemon
// that exits at start.
func TestManifestsPoolIsLargeEnough(t *testing.T) {
	for dir, objs := range render(t) {
		for name, tmpl := range podSpecs(objs) {
			for _, c := range allContainers(&tmpl.Spec) {
				if !isDaemon(c) {
					continue
				}
				conns := setting(t, c, "postgres-max-conns", "KV_POSTGRES_MAX_CONNS")
				second := setting(t, c, "postgres-second-read-round", "KV_POSTGRES_SECOND_READ_ROUND")
				least := postgres.DefaultCommitters + 2
				if second > 0 {
					least++
				}
				if conns != 0 && conns < least {
					t.Errorf("%s %s: a pool of %d PostgreSQL connections; the daemon starts with no fewer than %d", dir, name, conns, least)
				}
			}
		}
	}
}

// setting returns the integer a container gives a daemon setting, as the
// flag (--flag=N or --flag N) or its environment variable, 0 when unset.
func setting(t *testing.T, c corev1.Container, flag, env string) int {
	t.Helper()
	value := ""
	if e := envOf(c, env); e != nil {
		value = e.Value
	}
	for i, a := range c.Args {
		if v, ok := strings.CutPrefix(a, "--"+flag+"="); ok {
			value = v
		} else if a == "--"+flag && i+1 < len(c.Args) {
			value = c.Args[i+1]
		}
	}
	if value == "" {
		return 0
	}
	n, err := strconv.Atoi(value)
	if err != nil {
		t.Errorf("%s: %s is %q, not a number", c.Name, flag, value)
	}
	return n
}

// socketDir returns the directory of the socket a container is given
// (KV_SOCKET), which must be set.
func socketDir(t *testing.T, where string, c corev1.Container) string {
	t.Helper()
	e := envOf(c, "KV_SOCKET")
	if e == nil || e.Value == "" {
		t.Errorf("%s: KV_SOCKET not set", where)
		return ""
	}
	return path.Dir(e.Value)
}

func TestSidecarShape(t *testing.T) {
	objs := render(t)["deploy/k8s/sidecar"]
	deps := find[*appsv1.Deployment](objs)
	if len(deps) != 1 {
		t.Fatalf("want one function Deployment, got %d", len(deps))
	}
	tmpl := deps[0].Spec.Template
	s := tmpl.Spec
	if len(s.InitContainers) != 1 || !isDaemon(s.InitContainers[0]) {
		t.Fatalf("want kvsidecar as the one init container, got %v", s.InitContainers)
	}
	side := s.InitContainers[0]
	if side.RestartPolicy == nil || *side.RestartPolicy != corev1.ContainerRestartPolicyAlways {
		t.Errorf("kvsidecar is not a native sidecar: want restartPolicy: Always on its init container")
	}
	if e := envOf(side, "KV_PROJECT"); e == nil || e.ValueFrom == nil || e.ValueFrom.FieldRef == nil ||
		e.ValueFrom.FieldRef.FieldPath != "metadata.labels['"+projectLabel+"']" {
		t.Errorf("KV_PROJECT must come from the pod's label %s through the Downward API, got %+v", projectLabel, e)
	}
	if tmpl.Labels[projectLabel] == "" {
		t.Errorf("the pod template has no %s label for KV_PROJECT to read", projectLabel)
	}
	dir := socketDir(t, "kvsidecar", side)
	vol, _ := mountFor(side, dir)
	if v := volume(&s, vol); v == nil || v.EmptyDir == nil {
		t.Fatalf("kvsidecar's socket directory %s is not on an emptyDir volume", dir)
	}
	if len(s.Containers) == 0 {
		t.Fatal("no function container")
	}
	for _, c := range s.Containers {
		if d := socketDir(t, c.Name, c); d != dir {
			t.Errorf("container %s looks for the socket in %s, the sidecar serves it in %s", c.Name, d, dir)
		}
		if v, _ := mountFor(c, dir); v != vol {
			t.Errorf("container %s does not mount the socket volume %s at %s", c.Name, vol, dir)
		}
	}
	if s.TerminationGracePeriodSeconds == nil || *s.TerminationGracePeriodSeconds <= 30 {
		t.Errorf("terminationGracePeriodSeconds must exceed the daemon's 30s shutdown timeout")
	}
}

func TestDaemonSetShape(t *testing.T) {
	rendered := render(t)
	objs := rendered["deploy/k8s/daemonset"]
	dss := find[*appsv1.DaemonSet](objs)
	if len(dss) != 1 {
		t.Fatalf("want one DaemonSet, got %d", len(dss))
	}
	ds := dss[0]
	s := ds.Spec.Template.Spec
	if !s.HostPID {
		t.Error("want hostPID: true: peers in other pid namespaces have pid 0 and cannot be identified")
	}
	var daemon *corev1.Container
	for i := range s.Containers {
		if isDaemon(s.Containers[i]) {
			daemon = &s.Containers[i]
		}
	}
	if daemon == nil {
		t.Fatal("no kvsidecar container in the DaemonSet")
	}
	args := strings.Join(daemon.Args, " ")
	if args != "--identity k8s" && args != "--identity=k8s" && envOf(*daemon, "KV_IDENTITY") == nil {
		t.Errorf("the DaemonSet's daemon runs with %q; want --identity k8s", args)
	}
	if e := envOf(*daemon, "NODE_NAME"); e == nil || e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != "spec.nodeName" {
		t.Errorf("NODE_NAME must come from spec.nodeName through the Downward API, got %+v", e)
	}
	dir := socketDir(t, "kvsidecar", *daemon)
	vol, _ := mountFor(*daemon, dir)
	v := volume(&s, vol)
	if v == nil || v.HostPath == nil || v.HostPath.Type == nil || *v.HostPath.Type != corev1.HostPathDirectoryOrCreate {
		t.Fatalf("the socket directory %s must be a hostPath volume of type DirectoryOrCreate, got %+v", dir, v)
	}
	hostDir := v.HostPath.Path
	for _, c := range s.InitContainers {
		if m, _ := mountFor(c, dir); m != vol {
			t.Errorf("init container %s does not prepare the socket volume", c.Name)
		}
	}

	// RBAC: the service account may read pods and nothing else.
	sas := find[*corev1.ServiceAccount](objs)
	if len(sas) != 1 || sas[0].Name != s.ServiceAccountName {
		t.Fatalf("the DaemonSet runs as %q; the overlay defines %v", s.ServiceAccountName, sas)
	}
	roles := find[*rbacv1.ClusterRole](objs)
	if len(roles) != 1 || len(roles[0].Rules) != 1 {
		t.Fatalf("want one ClusterRole with one rule, got %v", roles)
	}
	rule := roles[0].Rules[0]
	if !slices.Equal(rule.APIGroups, []string{""}) || !slices.Equal(rule.Resources, []string{"pods"}) ||
		!slices.Equal(rule.Verbs, []string{"get", "list", "watch"}) {
		t.Errorf("the role allows %v %v %v; want get, list, watch on pods only", rule.APIGroups, rule.Resources, rule.Verbs)
	}
	bindings := find[*rbacv1.ClusterRoleBinding](objs)
	if len(bindings) != 1 || bindings[0].RoleRef.Name != roles[0].Name || len(bindings[0].Subjects) != 1 ||
		bindings[0].Subjects[0].Name != sas[0].Name || bindings[0].Subjects[0].Namespace != sas[0].Namespace {
		t.Errorf("the binding does not bind role %s to service account %s/%s: %+v", roles[0].Name, sas[0].Namespace, sas[0].Name, bindings)
	}

	// The example function mounts the node's directory and finds the
	// socket where the daemon serves it.
	fn := find[*appsv1.Deployment](rendered["deploy/k8s/daemonset/example-function"])
	if len(fn) != 1 {
		t.Fatalf("want one example function Deployment, got %d", len(fn))
	}
	ft := fn[0].Spec.Template
	if ft.Labels[projectLabel] == "" {
		t.Errorf("the example function's pods have no %s label: the daemon would refuse them", projectLabel)
	}
	for _, c := range ft.Spec.Containers {
		d := socketDir(t, c.Name, c)
		if d != dir {
			t.Errorf("function container %s looks for the socket in %s, the daemon serves it in %s", c.Name, d, dir)
		}
		m, ro := mountFor(c, d)
		fv := volume(&ft.Spec, m)
		if fv == nil || fv.HostPath == nil || fv.HostPath.Path != hostDir {
			t.Errorf("function container %s does not mount the node's %s at %s", c.Name, hostDir, d)
		}
		if !ro {
			t.Errorf("function container %s mounts the socket directory writable: it could replace the socket", c.Name)
		}
	}
}

func TestAdminShape(t *testing.T) {
	objs := render(t)["deploy/k8s/admin"]
	deps := find[*appsv1.Deployment](objs)
	svcs := find[*corev1.Service](objs)
	if len(deps) != 1 || len(svcs) != 1 {
		t.Fatalf("want the admin Deployment and its Service, got %d and %d", len(deps), len(svcs))
	}
	s := deps[0].Spec.Template.Spec
	if len(s.Containers) != 1 || !isDaemon(s.Containers[0]) {
		t.Fatalf("want one kvsidecar container, got %v", s.Containers)
	}
	c := s.Containers[0]
	flags := map[string]string{}
	for _, a := range c.Args {
		name, value, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		flags[name] = value
	}
	if v, ok := flags["socket"]; !ok || v != "" {
		t.Errorf("the admin instance serves no function socket: want --socket= in %v", c.Args)
	}
	var adminPort int32
	for _, p := range c.Ports {
		if p.Name == "admin" {
			adminPort = p.ContainerPort
		}
	}
	if addr := flags["admin-addr"]; adminPort == 0 || !strings.HasSuffix(addr, ":"+itoa(adminPort)) {
		t.Errorf("--admin-addr=%s does not listen on the container's admin port %d", addr, adminPort)
	}
	svc := svcs[0]
	if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].TargetPort.String() != "admin" {
		t.Errorf("the Service does not target the admin port: %+v", svc.Spec.Ports)
	}
	for k, v := range svc.Spec.Selector {
		if deps[0].Spec.Template.Labels[k] != v {
			t.Errorf("the Service selects %s=%s, which the admin pods do not carry", k, v)
		}
	}
	tokens := flags["admin-tokens"]
	vol, _ := mountFor(c, path.Dir(tokens))
	if v := volume(&s, vol); v == nil || v.Secret == nil {
		t.Errorf("--admin-tokens=%s is not on a Secret volume", tokens)
	}
}

func TestPodMonitor(t *testing.T) {
	objs := render(t)["deploy/prometheus"]
	pms := find[*monitoringv1.PodMonitor](objs)
	if len(pms) != 1 || len(pms[0].Spec.PodMetricsEndpoints) != 1 {
		t.Fatalf("want one PodMonitor with one endpoint, got %v", pms)
	}
	ep := pms[0].Spec.PodMetricsEndpoints[0]
	if ep.Port == nil || *ep.Port != metricsPortName || ep.Path != "/metrics" {
		t.Errorf("the PodMonitor scrapes port %v path %s; want %s /metrics", ep.Port, ep.Path, metricsPortName)
	}
	if !pms[0].Spec.NamespaceSelector.Any {
		t.Error("function pods run in any namespace: want namespaceSelector any: true")
	}
	var job bool
	for _, r := range ep.RelabelConfigs {
		if r.TargetLabel == "job" && r.Replacement != nil && *r.Replacement == "kvsidecar" {
			job = true
		}
	}
	if !job {
		t.Error(`the alerts and the dashboard select job="kvsidecar": the PodMonitor must set it`)
	}
}

func itoa(n int32) string { return strconv.Itoa(int(n)) }
