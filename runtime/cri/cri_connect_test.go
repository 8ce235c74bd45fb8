package cri

import (
	"testing"
	"time"
)

// The reconnection back-off is the kubelet's (cri-client): 100 ms up to 3 s.
func TestConnectParamsAreTheKubelets(t *testing.T) {
	p := ConnectParams()
	if p.Backoff.BaseDelay != 100*time.Millisecond || p.Backoff.MaxDelay != 3*time.Second || p.MinConnectTimeout != 5*time.Second || p.Backoff.Multiplier != 1.6 {
		t.Errorf("connect params %+v", p)
	}
}
