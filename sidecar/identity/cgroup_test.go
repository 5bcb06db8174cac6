package identity

import (
	"strings"
	"testing"
)

// Lines as the kernel prints them in /proc/<pid>/cgroup on the nodes of the
// common Kubernetes set-ups.
func TestPodUIDFromCgroup(t *testing.T) {
	const uid = "2c48913c-b29f-11e7-9350-020968147796"
	const cid = "9bca8d63d5fa610783847915bcff0ecac1273e5b4bed3f6fa1b07350e0135961"
	tests := []struct {
		name    string
		cgroup  string
		want    string
		wantErr string
	}{
		{
			name:   "v1 cgroupfs driver, docker, burstable",
			cgroup: "12:memory:/kubepods/burstable/pod" + uid + "/" + cid + "\n",
			want:   uid,
		},
		{
			name: "v1 cgroupfs driver, every controller",
			cgroup: "12:pids:/kubepods/besteffort/pod" + uid + "/" + cid + "\n" +
				"11:hugetlb:/kubepods/besteffort/pod" + uid + "/" + cid + "\n" +
				"4:cpu,cpuacct:/kubepods/besteffort/pod" + uid + "/" + cid + "\n" +
				"1:name=systemd:/kubepods/besteffort/pod" + uid + "/" + cid + "\n",
			want: uid,
		},
		{
			name:   "v1 cgroupfs driver, guaranteed (no QoS level)",
			cgroup: "3:cpuset:/kubepods/pod" + uid + "/" + cid + "\n",
			want:   uid,
		},
		{
			name:   "v1 systemd driver, docker",
			cgroup: "1:name=systemd:/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod2c48913c_b29f_11e7_9350_020968147796.slice/docker-" + cid + ".scope\n",
			want:   uid,
		},
		{
			name:   "v1 systemd driver, cri-o",
			cgroup: "10:devices:/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod2c48913c_b29f_11e7_9350_020968147796.slice/crio-" + cid + ".scope\n",
			want:   uid,
		},
		{
			name:   "v1 systemd driver, cri-o's conmon",
			cgroup: "5:pids:/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod2c48913c_b29f_11e7_9350_020968147796.slice/crio-conmon-" + cid + ".scope\n",
			want:   uid,
		},
		{
			name:   "v2 systemd driver, containerd",
			cgroup: "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod2c48913c_b29f_11e7_9350_020968147796.slice/cri-containerd-" + cid + ".scope\n",
			want:   uid,
		},
		{
			name:   "v2 systemd driver, guaranteed",
			cgroup: "0::/kubepods.slice/kubepods-pod2c48913c_b29f_11e7_9350_020968147796.slice/cri-containerd-" + cid + ".scope\n",
			want:   uid,
		},
		{
			name:   "v2 cgroupfs driver, containerd",
			cgroup: "0::/kubepods/besteffort/pod" + uid + "/" + cid + "\n",
			want:   uid,
		},
		{
			name:   "v2 kind node (kubelet nested under kubelet.slice)",
			cgroup: "0::/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod2c48913c_b29f_11e7_9350_020968147796.slice/cri-containerd-" + cid + ".scope\n",
			want:   uid,
		},
		{
			name:   "v2 read from inside the daemon's own cgroup namespace",
			cgroup: "0::/../../kubepods-besteffort-pod2c48913c_b29f_11e7_9350_020968147796.slice/cri-containerd-" + cid + ".scope\n",
			want:   uid,
		},
		{
			name:   "static pod (UID is the manifest hash)",
			cgroup: "0::/kubepods/burstable/pod8dc4ec1a1e8ad8ba2f7df48cdb2cd7de/" + cid + "\n",
			want:   "8dc4ec1a1e8ad8ba2f7df48cdb2cd7de",
		},
		{
			name:   "upper-case hex is not how the kubelet writes a UID",
			cgroup: "0::/kubepods/burstable/pod2C48913C-B29F-11E7-9350-020968147796/" + cid + "\n",
			want:   "",
		},
		{
			name:   "v1 and v2 lines of one pod",
			cgroup: "1:name=systemd:/kubepods/burstable/pod" + uid + "/" + cid + "\n0::/kubepods/burstable/pod" + uid + "/" + cid + "\n",
			want:   uid,
		},
		{
			name:   "login session, not a pod",
			cgroup: "0::/user.slice/user-1000.slice/session-3.scope\n",
			want:   "",
		},
		{
			name:   "plain docker container, not a pod",
			cgroup: "0::/system.slice/docker-" + cid + ".scope\n",
			want:   "",
		},
		{
			name:   "a 32-hex-digit cgroup that is not a pod",
			cgroup: "4:memory:/process_api/8d635f4d018bf0860dfd1ecce282669d\n0::/\n",
			want:   "",
		},
		{
			name:   "the root cgroup",
			cgroup: "0::/\n",
			want:   "",
		},
		{
			name:   "empty file",
			cgroup: "",
			want:   "",
		},
		{
			name:   "the QoS slices alone",
			cgroup: "0::/kubepods.slice/kubepods-burstable.slice\n",
			want:   "",
		},
		{
			name:    "controllers in two pods",
			cgroup:  "12:memory:/kubepods/burstable/pod" + uid + "/" + cid + "\n11:pids:/kubepods/burstable/pod6f5d5a7a-1234-4cde-9f01-23456789abcd/" + cid + "\n",
			wantErr: "more than one pod (2c48913c-b29f-11e7-9350-020968147796 and 6f5d5a7a-1234-4cde-9f01-23456789abcd)",
		},
		{
			name:    "one path naming two pods",
			cgroup:  "0::/kubepods/pod" + uid + "/pod6f5d5a7a-1234-4cde-9f01-23456789abcd/" + cid + "\n",
			wantErr: "names more than one pod",
		},
		{
			name:    "v2 line and v1 line disagree",
			cgroup:  "1:name=systemd:/kubepods/pod" + uid + "/" + cid + "\n0::/kubepods.slice/kubepods-pod6f5d5a7a_1234_4cde_9f01_23456789abcd.slice/cri-containerd-" + cid + ".scope\n",
			wantErr: "more than one pod",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := PodUIDFromCgroup(strings.NewReader(tt.cgroup))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("PodUIDFromCgroup = %q, %v; want an error containing %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("PodUIDFromCgroup = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func FuzzPodUIDFromCgroup(f *testing.F) {
	f.Add("0::/kubepods.slice/kubepods-pod2c48913c_b29f_11e7_9350_020968147796.slice/cri-containerd-x.scope\n")
	f.Add("12:memory:/kubepods/burstable/pod2c48913c-b29f-11e7-9350-020968147796/x\n")
	f.Fuzz(func(t *testing.T, s string) {
		uid, err := PodUIDFromCgroup(strings.NewReader(s))
		if err == nil && uid != "" && !strings.Contains(strings.ReplaceAll(s, "_", "-"), uid) {
			t.Fatalf("uid %q is not in the input", uid)
		}
	})
}
