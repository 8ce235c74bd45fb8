package podplan

import "testing"

func TestSystemdCgroupName(t *testing.T) {
	tests := []struct{ in, want string }{
		{"/", "/"},
		{"", "/"},
		{"/kubepods", "/kubepods.slice"},
		{"/kubepods/burstable", "/kubepods.slice/kubepods-burstable.slice"},
		{"/kubepods/burstable/pod6b1a4f0e-1c2d-4e5f-8a9b-0c1d2e3f4a5b",
			"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod6b1a4f0e_1c2d_4e5f_8a9b_0c1d2e3f4a5b.slice"},
		{"/kubepods/besteffort/podabc", "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podabc.slice"},
		{"/kubepods/podabc", "/kubepods.slice/kubepods-podabc.slice"},
		{"/nk/kubepods/podabc", "/nk.slice/nk-kubepods.slice/nk-kubepods-podabc.slice"},
	}
	for _, tt := range tests {
		if got := SystemdCgroupName(tt.in); got != tt.want {
			t.Errorf("SystemdCgroupName(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	if got, want := SystemdCgroupsPath("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podabc.slice", "cri-containerd", "c1"), "kubepods-burstable-podabc.slice:cri-containerd:c1"; got != want {
		t.Errorf("SystemdCgroupsPath = %q, want %q", got, want)
	}
}
