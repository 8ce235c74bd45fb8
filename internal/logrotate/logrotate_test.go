package logrotate

import (
	"compress/gzip"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	testingclock "k8s.io/utils/clock/testing"
)

var now = time.Date(2026, 12, 1, 10, 0, 9, 0, time.UTC)

func TestDecide(t *testing.T) {
	const log = "/l/0.log"
	r := func(s string) string { return log + ".20261201-10000" + s }
	policy := Policy{MaxSize: 100, MaxFiles: 5}
	for _, tt := range []struct {
		name    string
		size    int64
		rotated []string
		p       Policy
		want    Plan
	}{
		{name: "below maxSize: nothing, whatever lies beside it", size: 99, rotated: []string{r("1"), r("2"), r("3"), r("4"), r("5"), r("6")}, p: policy},
		{name: "first rotation", size: 100, p: policy, want: Plan{Rotate: r("9")}},
		{name: "the previous rotated files are compressed", size: 150, rotated: []string{r("1") + ".gz", r("2")}, p: policy,
			want: Plan{Compress: []string{r("2")}, Rotate: r("9")}},
		{name: "maxFiles 5: 3 rotated kept, the oldest removed first, compressed or not",
			size: 100, rotated: []string{r("4"), r("2") + ".gz", r("1") + ".gz", r("3") + ".gz", r("5")}, p: policy,
			want: Plan{Remove: []string{r("1") + ".gz", r("2") + ".gz"}, Compress: []string{r("4"), r("5")}, Rotate: r("9")}},
		{name: "maxFiles 2: no rotated file stays before the rotation", size: 100, rotated: []string{r("1") + ".gz", r("2")},
			p: Policy{MaxSize: 100, MaxFiles: 2}, want: Plan{Remove: []string{r("1") + ".gz", r("2")}, Rotate: r("9")}},
		{name: "unused files: an unfinished compression, an original whose .gz was written",
			size: 100, rotated: []string{r("1") + ".gz", r("2") + ".tmp", r("3"), r("3") + ".gz"}, p: policy,
			want: Plan{Remove: []string{r("2") + ".tmp", r("3")}, Rotate: r("9")}},
		{name: "rotated within this second already: nothing (upstream would replace it)", size: 100, rotated: []string{r("9")}, p: policy},
		{name: "... even once compressed", size: 100, rotated: []string{r("9") + ".gz"}, p: policy},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := Decide(log, tt.size, tt.rotated, now, tt.p); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

// fakeRuntime is one running container whose log is at path; reopening makes a new
// empty file there, unless reopenErr.
type fakeRuntime struct {
	path      string
	reopenErr error
	reopens   int
}

func (f *fakeRuntime) ListContainers(_ context.Context, filter *runtimeapi.ContainerFilter) ([]*runtimeapi.Container, error) {
	if filter.GetState().GetState() != runtimeapi.ContainerState_CONTAINER_RUNNING || filter.GetLabelSelector()["managed"] != "true" {
		return nil, errors.New("unexpected filter")
	}
	return []*runtimeapi.Container{{Id: "c1"}}, nil
}

func (f *fakeRuntime) ContainerStatus(context.Context, string) (*runtimeapi.ContainerStatus, error) {
	return &runtimeapi.ContainerStatus{Id: "c1", LogPath: f.path}, nil
}

func (f *fakeRuntime) ReopenContainerLog(context.Context, string) error {
	f.reopens++
	if f.reopenErr != nil {
		return f.reopenErr
	}
	return os.WriteFile(f.path, nil, 0o640)
}

func TestRotator(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "0.log")
	clk := testingclock.NewFakeClock(now)
	rt := &fakeRuntime{path: path}
	r := &Rotator{Runtime: rt, Policy: Policy{MaxSize: 10, MaxFiles: 3}, Clock: clk, Labels: map[string]string{"managed": "true"}}
	files := func() []string {
		m, _ := filepath.Glob(path + "*")
		for i := range m {
			m[i] = filepath.Base(m[i])
		}
		sort.Strings(m)
		return m
	}
	write := func(s string) {
		if err := os.WriteFile(path, []byte(s), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	for i, content := range []string{"first log line\n", "second log line\n", "third log line\n", "short\n"} {
		write(content)
		if err := r.RotateAll(ctx); err != nil {
			t.Fatalf("rotation %d: %v", i, err)
		}
		clk.Step(time.Second)
	}
	// current (empty after the third reopen, then "short" stays: below maxSize) + 2 rotated
	want := []string{"0.log", "0.log.20261201-100010.gz", "0.log.20261201-100011"}
	if got := files(); !reflect.DeepEqual(got, want) {
		t.Fatalf("files %v, want %v", got, want)
	}
	gz, err := os.Open(path + ".20261201-100010.gz")
	if err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(gz)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := io.ReadAll(zr); string(b) != "second log line\n" {
		t.Errorf("compressed content %q", b)
	}
	_ = gz.Close()
	if fi, _ := os.Stat(path + ".20261201-100010.gz"); fi.Mode().Perm() != 0o640 {
		t.Errorf("compressed mode %v, want the log's", fi.Mode())
	}

	// the runtime cannot reopen: the log is put back where the runtime writes
	rt.reopenErr = errors.New("runtime down")
	write("fourth log line\n")
	if err := r.RotateAll(ctx); err == nil || !strings.Contains(err.Error(), "runtime down") {
		t.Fatalf("want the reopen error, got %v", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "fourth log line\n" {
		t.Errorf("log not put back: %q", b)
	}

	// a log removed by hand is reopened
	rt.reopenErr = nil
	_ = os.Remove(path)
	n := rt.reopens
	if err := r.RotateAll(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); err != nil || rt.reopens != n+1 {
		t.Errorf("missing log not reopened: %v, %d reopens", err, rt.reopens-n)
	}
}
