package prober

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/nodekeeper/nodekeeper/internal/probehttp"
	"github.com/nodekeeper/nodekeeper/runtime/cri"
)

// Execer runs a command in a running container: all the prober needs of the runtime
// (cri.Runtime has it). A command that ran is not an error whatever its exit code; one
// past its timeout wraps context.DeadlineExceeded.
type Execer interface {
	ExecSync(ctx context.Context, id string, cmd []string, timeout time.Duration) (*cri.ExecResult, error)
}

// MaxRetries: a probe that errors (as opposed to failing) is tried this many times
// before its result is thrown away, as upstream's runProbeWithRetries.
const MaxRetries = 3

// Outcome is one run of a probe as the worker reports it.
type Outcome struct {
	Result Result
	// Warning: a success with something to report (a redirect to another host not
	// followed): a ProbeWarning event
	Warning bool
	// Message is the failure's or warning's output
	Message string
	// Err is why the probe errored (Result Unknown)
	Err error
}

// Run runs a probe of container id (spec) in a pod at host, retrying errors as
// upstream's runProbeWithRetries.
func Run(ctx context.Context, ex Execer, host, id string, spec *corev1.Container, pr *corev1.Probe) Outcome {
	var o Outcome
	for range MaxRetries {
		if o = runOnce(ctx, ex, host, id, spec, pr); o.Err == nil {
			break
		}
	}
	return o
}

// runOnce runs a probe once: exec through the runtime, httpGet (probehttp: as
// upstream's HTTP prober), tcpSocket, or grpc (the standard health service).
//
// Unknown is an error of the prober, not a failure of the probe (upstream's
// probe.Unknown with an error): an exec the runtime could not run at all, an httpGet
// whose port or request cannot be made. An exec that timed out or exited non-zero, and
// every http, tcp and grpc outcome, is a result.
func runOnce(ctx context.Context, ex Execer, host, id string, spec *corev1.Container, pr *corev1.Probe) Outcome {
	timeout := time.Duration(pr.TimeoutSeconds) * time.Second
	if timeout <= 0 {
		timeout = time.Second
	}
	fail := func(msg string) Outcome { return Outcome{Result: Failure, Message: msg} }
	port := func(ps intstr.IntOrString) string {
		if ps.Type == intstr.String {
			for _, cp := range spec.Ports {
				if cp.Name == ps.StrVal {
					return strconv.Itoa(int(cp.ContainerPort))
				}
			}
		}
		return ps.String()
	}
	switch {
	case pr.Exec != nil:
		res, err := ex.ExecSync(ctx, id, pr.Exec.Command, timeout)
		if errors.Is(err, context.DeadlineExceeded) {
			return fail(fmt.Sprintf("command %q timed out", pr.Exec.Command))
		}
		if err == nil && res == nil {
			err = errors.New("the runtime returned no exec result")
		}
		if err != nil {
			return Outcome{Result: Unknown, Err: err}
		}
		if res.ExitCode != 0 {
			return fail(fmt.Sprintf("command %q exited with %d: %s", pr.Exec.Command, res.ExitCode, strings.TrimSpace(string(res.Stdout)+string(res.Stderr))))
		}
		return Outcome{Result: Success}
	case pr.HTTPGet != nil:
		portNum, err := strconv.Atoi(port(pr.HTTPGet.Port))
		if err != nil {
			return Outcome{Result: Unknown, Err: fmt.Errorf("invalid port %q: %v", pr.HTTPGet.Port.String(), err)}
		}
		req, err := probehttp.NewRequest(pr.HTTPGet, portNum, host)
		if err != nil {
			return Outcome{Result: Unknown, Err: err}
		}
		res, msg := probehttp.Do(req.WithContext(ctx), timeout)
		switch res {
		case probehttp.Failure:
			return fail(msg)
		case probehttp.Warning:
			return Outcome{Result: Success, Warning: true, Message: msg}
		}
		return Outcome{Result: Success}
	case pr.TCPSocket != nil:
		h := pr.TCPSocket.Host
		if h == "" {
			h = host
		}
		c, err := net.DialTimeout("tcp", net.JoinHostPort(h, port(pr.TCPSocket.Port)), timeout)
		if err != nil {
			return fail(err.Error())
		}
		_ = c.Close() // a closing error says nothing of the probe
		return Outcome{Result: Success}
	case pr.GRPC != nil:
		conn, err := grpc.NewClient(net.JoinHostPort(host, strconv.Itoa(int(pr.GRPC.Port))), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return fail(err.Error())
		}
		defer conn.Close()
		gctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		svc := ""
		if pr.GRPC.Service != nil {
			svc = *pr.GRPC.Service
		}
		resp, err := healthpb.NewHealthClient(conn).Check(gctx, &healthpb.HealthCheckRequest{Service: svc})
		if err != nil {
			return fail(err.Error())
		}
		if resp.Status != healthpb.HealthCheckResponse_SERVING {
			return fail(fmt.Sprintf("service unhealthy (responded with %q)", resp.Status))
		}
		return Outcome{Result: Success}
	}
	return Outcome{Result: Success}
}
