package fault

import (
	"bufio"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
)

// NK_FAULT_CTTRACE=1: every traffic client also follows the node namespace's conntrack
// events for its destination, and its summary lists the connections whose SYN was never
// answered (the rare "never connected" failures of the outage cases): when conntrack saw
// them and which backend they were DNATed to — or that conntrack never saw them.
var ctTraceOn = os.Getenv("NK_FAULT_CTTRACE") == "1"

type ctTrace struct {
	cmd   *exec.Cmd
	mu    sync.Mutex
	byID  map[string][]string
	order []string
	done  chan struct{}
}

func startCTTrace(rawURL string) *ctTrace {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil
	}
	host, port, err := net.SplitHostPort(u.Host)
	if err != nil {
		host, port = u.Host, "80"
	}
	c := &ctTrace{byID: map[string][]string{}, done: make(chan struct{})}
	c.cmd = exec.Command("ip", "netns", "exec", netns, "conntrack", "-E", "-p", "tcp", "--orig-dst", host, "--dport", port, "-o", "timestamp,id")
	out, err := c.cmd.StdoutPipe()
	if err != nil {
		return nil
	}
	if err := c.cmd.Start(); err != nil {
		fmt.Fprintf(GinkgoWriter, "cttrace: %v\n", err)
		return nil
	}
	idRE := regexp.MustCompile(`id=(\d+)`)
	go func() {
		defer close(c.done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			l := sc.Text()
			m := idRE.FindStringSubmatch(l)
			if m == nil {
				continue
			}
			c.mu.Lock()
			if _, ok := c.byID[m[1]]; !ok {
				c.order = append(c.order, m[1])
			}
			c.byID[m[1]] = append(c.byID[m[1]], l)
			c.mu.Unlock()
		}
	}()
	return c
}

// stop ends the trace and returns the events of the connections that never got past
// SYN_SENT (seen NEW, never SYN_RECV or ESTABLISHED), oldest first, and how many
// connections it saw.
func (c *ctTrace) stop() (unanswered []string, seen int) {
	if c == nil {
		return nil, 0
	}
	time.Sleep(200 * time.Millisecond) // the last events
	_ = c.cmd.Process.Kill()
	_ = c.cmd.Wait()
	<-c.done
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, id := range c.order {
		evs := c.byID[id]
		answered, isNew := false, false
		for _, e := range evs {
			answered = answered || strings.Contains(e, "SYN_RECV") || strings.Contains(e, "ESTABLISHED")
			isNew = isNew || strings.Contains(e, "[NEW]")
		}
		if isNew {
			seen++
			if !answered {
				unanswered = append(unanswered, strings.Join(evs, " | "))
			}
		}
	}
	return unanswered, seen
}
