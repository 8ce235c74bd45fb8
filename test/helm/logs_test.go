package helm

import (
	"fmt"
	"strings"
	"sync"

	"github.com/go-logr/logr"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
)

// logs captures everything controller-runtime and client-go (klog: reflector list/watch
// failures, rejected events) log, at every verbosity, so that a test can look for
// "forbidden" in what the agent logged.
var logs = &logBuffer{}

type logBuffer struct {
	mu    sync.Mutex
	lines []string
}

func (b *logBuffer) add(line string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.lines = append(b.lines, line)
}

// mark is a position to read from later.
func (b *logBuffer) mark() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.lines)
}

// since returns the lines logged after mark.
func (b *logBuffer) since(mark int) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.lines[mark:]...)
}

// matching returns the lines logged after mark that contain substr (case-insensitive).
func (b *logBuffer) matching(mark int, substr string) []string {
	var out []string
	for _, l := range b.since(mark) {
		if strings.Contains(strings.ToLower(l), strings.ToLower(substr)) {
			out = append(out, l)
		}
	}
	return out
}

func installLogCapture() {
	l := logr.New(&captureSink{buf: logs})
	ctrl.SetLogger(l)
	klog.SetLogger(l.WithName("klog"))
}

// captureSink is a logr.LogSink writing one line per entry to a logBuffer.
type captureSink struct {
	buf  *logBuffer
	name string
	kv   []any
}

func (s *captureSink) Init(logr.RuntimeInfo) {}
func (s *captureSink) Enabled(int) bool      { return true }

func (s *captureSink) Info(level int, msg string, kv ...any) {
	s.write(fmt.Sprintf("V%d", level), msg, nil, kv)
}

func (s *captureSink) Error(err error, msg string, kv ...any) {
	s.write("ERROR", msg, err, kv)
}

func (s *captureSink) write(level, msg string, err error, kv []any) {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s: %s", level, s.name, msg)
	if err != nil {
		fmt.Fprintf(&b, " error=%q", err.Error())
	}
	all := append(append([]any(nil), s.kv...), kv...)
	for i := 0; i+1 < len(all); i += 2 {
		fmt.Fprintf(&b, " %v=%v", all[i], all[i+1])
	}
	s.buf.add(strings.ReplaceAll(b.String(), "\n", `\n`))
}

func (s *captureSink) WithValues(kv ...any) logr.LogSink {
	c := *s
	c.kv = append(append([]any(nil), s.kv...), kv...)
	return &c
}

func (s *captureSink) WithName(name string) logr.LogSink {
	c := *s
	if c.name != "" {
		name = c.name + "." + name
	}
	c.name = name
	return &c
}
