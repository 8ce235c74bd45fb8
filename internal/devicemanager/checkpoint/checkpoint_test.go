package checkpoint

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The bytes the kubelet v1.37.2 writes for this data (its checkpoint package's
// MarshalCheckpoint, run once on the same input): same JSON, same checksum.
const upstream = `{"Data":{"PodDeviceEntries":[{"PodUID":"u1","ContainerName":"c","ResourceName":"example.com/dev","DeviceIDs":{"-1":["d1","d2"]},"AllocResp":"CgMBAgM="}],"RegisteredDevices":{"example.com/dev":["d1","d2","d3"]}},"Checksum":2079452758}`

func sample() *Data {
	return New([]PodDevicesEntry{{PodUID: "u1", ContainerName: "c", ResourceName: "example.com/dev",
		DeviceIDs: DevicesPerNUMA{NodeWithoutTopology: {"d1", "d2"}}, AllocResp: []byte{10, 3, 1, 2, 3}}},
		map[string][]string{"example.com/dev": {"d1", "d2", "d3"}})
}

func TestUpstreamFormat(t *testing.T) {
	b, err := sample().Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != upstream {
		t.Errorf("got  %s\nwant %s", b, upstream)
	}
	d, err := Unmarshal([]byte(upstream))
	if err != nil {
		t.Fatal(err)
	}
	if e, r := d.GetData(); len(e) != 1 || e[0].DeviceIDs[NodeWithoutTopology][1] != "d2" || len(r["example.com/dev"]) != 3 {
		t.Errorf("read back %+v %+v", e, r)
	}
	if _, err := Unmarshal([]byte(strings.Replace(upstream, `"d3"`, `"d4"`, 1))); err == nil || !strings.Contains(err.Error(), "corrupted") {
		t.Errorf("a changed file passed its checksum: %v", err)
	}
}

func TestWriteRead(t *testing.T) {
	dir := t.TempDir()
	if d, err := Read(dir); d != nil || err != nil {
		t.Fatalf("no file: %v %v", d, err)
	}
	if err := Write(dir, sample()); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(dir, FileName))
	if string(b) != upstream {
		t.Errorf("file %s", b)
	}
	if d, err := Read(dir); err != nil || len(d.Data.PodDeviceEntries) != 1 {
		t.Errorf("read %v %v", d, err)
	}
	if es, _ := os.ReadDir(dir); len(es) != 1 {
		t.Errorf("left files: %v", es)
	}
}
