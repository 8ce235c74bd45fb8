package fault

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

// nftTable: the agent's main nftables table or one of its shards is there.
func nftTable() bool {
	return exec.Command("ip", "netns", "exec", netns, "nft", "list", "table", "ip", "nodekeeper").Run() == nil ||
		exec.Command("ip", "netns", "exec", netns, "nft", "list", "table", "ip", nftShard).Run() == nil
}

func iptablesKubeChains() int {
	return strings.Count(iptablesSave("nat"), ":KUBE-SVC-")
}

// switchMode restarts the agent (SIGTERM) with config and returns how long the Service
// took to answer through the new mode's rules.
func switchMode(config string, done func() bool) time.Duration {
	signalAndWait(readPID(pidFile("nodekeeper")), syscall.SIGTERM, 30*time.Second)
	t0 := time.Now()
	startAgentWith(config)
	Eventually(done, time.Minute, 100*time.Millisecond).Should(BeTrue())
	return time.Since(t0)
}

func modeSwitchCases() {
	It("removes the other mode's rules when the proxy mode changes, as kube-proxy does at start", func() {
		base, err := os.ReadFile(filepath.Join(runDir, "agent.yaml"))
		Expect(err).NotTo(HaveOccurred())
		nftCfg := filepath.Join(runDir, "agent-nftables.yaml")
		Expect(os.WriteFile(nftCfg, append(base, []byte("proxyMode: nftables\n")...), 0o644)).To(Succeed())
		Expect(iptablesKubeChains()).To(BeNumerically(">", 0))
		Expect(nftTable()).To(BeFalse())
		cip := startTraffic(clusterIPURL, 20*time.Millisecond)
		toNFT := switchMode(nftCfg, func() bool { return nftTable() && iptablesKubeChains() == 0 })
		time.Sleep(3 * time.Second)
		toIPT := switchMode(filepath.Join(runDir, "agent.yaml"), func() bool { return !nftTable() && iptablesKubeChains() > 0 })
		time.Sleep(3 * time.Second)
		cip.Stop()
		figure("proxy mode switch", "iptables → nftables: iptables chains gone, nftables table in place %v after the start; back to iptables in %v; ClusterIP through both switches %s",
			toNFT.Round(100*time.Millisecond), toIPT.Round(100*time.Millisecond), cip.Summary())
		expectServed(cip, "ClusterIP")
	})
}
