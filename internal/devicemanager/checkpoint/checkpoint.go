// Package checkpoint is the kubelet's device manager checkpoint
// (pkg/kubelet/cm/devicemanager/checkpoint): the file kubelet_internal_checkpoint in the
// device plugin folder, holding which devices each container was given (with the
// plugin's Allocate answer) and the healthy devices of every registered resource. The
// format is upstream's to the byte, checksum included: the package and its types carry
// upstream's names because the checksum hashes their printed form (an FNV-32a of
// k8s.io/apimachinery's dump.ForHash of the data), so the kubelet and nodekeeper read
// each other's files.
package checkpoint

import (
	"encoding/json"
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"

	"k8s.io/apimachinery/pkg/util/dump"
)

// FileName is the checkpoint's name in the device plugin folder (upstream's
// kubeletDeviceManagerCheckpoint).
const FileName = "kubelet_internal_checkpoint"

// DevicesPerNUMA is the device IDs of an allocation by NUMA node (-1: no topology).
type DevicesPerNUMA map[int64][]string

// NodeWithoutTopology is the NUMA key of devices whose plugin reports no topology.
const NodeWithoutTopology = -1

// PodDevicesEntry is one container's allocation of one resource.
type PodDevicesEntry struct {
	PodUID        string
	ContainerName string
	ResourceName  string
	DeviceIDs     DevicesPerNUMA
	AllocResp     []byte // the ContainerAllocateResponse, protobuf
}

type checkpointData struct {
	PodDeviceEntries  []PodDevicesEntry
	RegisteredDevices map[string][]string
}

// Data is the file's content: the data and its checksum.
type Data struct {
	Data     checkpointData
	Checksum uint64
}

// New makes the checkpoint of entries and the registered (healthy) devices.
func New(entries []PodDevicesEntry, registered map[string][]string) *Data {
	return &Data{Data: checkpointData{PodDeviceEntries: entries, RegisteredDevices: registered}}
}

// GetData returns the entries and the registered devices.
func (d *Data) GetData() ([]PodDevicesEntry, map[string][]string) {
	return d.Data.PodDeviceEntries, d.Data.RegisteredDevices
}

func checksum(data checkpointData) uint64 {
	h := fnv.New32a()
	fmt.Fprintf(h, "%v", dump.ForHash(data))
	return uint64(h.Sum32())
}

// Marshal sets the checksum and returns the JSON upstream writes.
func (d *Data) Marshal() ([]byte, error) {
	d.Checksum = checksum(d.Data)
	return json.Marshal(*d)
}

// Unmarshal parses a checkpoint and verifies its checksum.
func Unmarshal(b []byte) (*Data, error) {
	d := &Data{}
	if err := json.Unmarshal(b, d); err != nil {
		return nil, err
	}
	if cs := checksum(d.Data); cs != d.Checksum {
		return nil, fmt.Errorf("checkpoint is corrupted: checksum %d, computed %d", d.Checksum, cs)
	}
	return d, nil
}

// Write stores d as dir/FileName, atomically (a temporary file renamed over it), as
// upstream's checkpoint manager.
func Write(dir string, d *Data) error {
	b, err := d.Marshal()
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, "."+FileName+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		_ = tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		_ = tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), filepath.Join(dir, FileName))
}

// Read loads dir/FileName; (nil, nil) when there is none.
func Read(dir string) (*Data, error) {
	b, err := os.ReadFile(filepath.Join(dir, FileName))
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return Unmarshal(b)
}
