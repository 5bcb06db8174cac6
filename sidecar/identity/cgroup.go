package identity

import (
	"bufio"
	"fmt"
	"io"
	"regexp"
	"strings"
)

// podSegment matches the part of a cgroup path that names a Kubernetes pod,
// in every style the kubelet writes:
//
//   - cgroupfs driver:  /kubepods/burstable/pod2c48913c-b29f-11e7-9350-020968147796/<container>
//   - systemd driver:   /kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod2c48913c_b29f_11e7_9350_020968147796.slice/cri-containerd-<id>.scope
//     (and crio-<id>.scope, docker-<id>.scope; kind nests it under kubelet.slice/kubelet-kubepods.slice)
//   - static pods, whose UID is the 32-hex-digit hash of their manifest: pod8dc4ec1a1e8ad8ba2f7df48cdb2cd7de
//
// The segment must be a whole path element ("pod<uid>" or "<prefix>-pod<uid>.slice"),
// so a container id that happens to contain "pod" is never taken for a pod.
var podSegment = regexp.MustCompile(`^(?:[a-z0-9_.-]*-)?pod(` +
	`[0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12}` +
	`|[0-9a-f]{32})(?:\.slice)?$`)

// PodUIDFromCgroup reads a /proc/<pid>/cgroup file (cgroup v1 lines
// "ID:controllers:path", or the v2 line "0::path") and returns the UID of
// the Kubernetes pod the process runs in, with dashes, as the API server
// spells it. It returns "" and no error when no line names a pod (a process
// outside Kubernetes), and an error when lines name different pods: the
// process is then not attributable to one pod, and guessing would let it act
// for the wrong project.
func PodUIDFromCgroup(r io.Reader) (string, error) {
	var uid string
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		// The path is everything after the second colon; it may itself
		// contain colons (cri-o's "crio-conmon-<id>.scope" does not, but
		// nothing forbids them).
		_, rest, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		_, path, ok := strings.Cut(rest, ":")
		if !ok {
			continue
		}
		found, err := podUIDFromPath(path)
		if err != nil {
			return "", err
		}
		if found == "" {
			continue
		}
		if uid != "" && uid != found {
			return "", fmt.Errorf("cgroup names more than one pod (%s and %s)", uid, found)
		}
		uid = found
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("read cgroup: %w", err)
	}
	return uid, nil
}

// podUIDFromPath returns the pod UID named by one cgroup path, or "".
func podUIDFromPath(path string) (string, error) {
	var uid string
	for _, elem := range strings.Split(path, "/") {
		m := podSegment.FindStringSubmatch(elem)
		if m == nil {
			continue
		}
		found := strings.ReplaceAll(m[1], "_", "-")
		if uid != "" && uid != found {
			return "", fmt.Errorf("cgroup path %q names more than one pod", path)
		}
		uid = found
	}
	return uid, nil
}
