package fault

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

// nftShard is the agent's first shard table, which holds the dispatch of this small
// cluster's Services (the main table "nodekeeper" holds masquerading and the rejects).
const nftShard = "nodekeeper-1"

// nftTableText is the agent's nftables tables (ip nodekeeper and its shards) as nft
// lists them.
func nftTableText() string {
	out, err := exec.Command("ip", "netns", "exec", netns, "nft", "list", "tables", "ip").CombinedOutput()
	if err != nil {
		return ""
	}
	var b strings.Builder
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Fields(l)
		if len(f) != 3 || (f[2] != "nodekeeper" && !strings.HasPrefix(f[2], "nodekeeper-")) {
			continue
		}
		t, err := exec.Command("ip", "netns", "exec", netns, "nft", "list", "table", "ip", f[2]).CombinedOutput()
		if err == nil {
			b.Write(t)
		}
	}
	return b.String()
}

// nft runs one nft command line (chain names with slashes are written as they are:
// nft 1.0 takes no quoted chain names).
func nft(cmd string) { inNode("nft", cmd) }

// nftSteadyElement: the service-ips map has the element of default/steady:http's
// ClusterIP, and its chain.
func nftSteadyElement() (string, bool) {
	cip := strings.TrimSuffix(strings.TrimPrefix(clusterIPURL, "http://"), "/")
	m := regexp.MustCompile(regexp.QuoteMeta(cip) + ` \. tcp \. 80 : goto (service-\S+-default/steady/tcp/http)`).FindStringSubmatch(nftTableText())
	if m == nil {
		return "", false
	}
	return m[1], true
}

// nftChainRules is the number of rules in one of the agent's chains (-1: no such chain).
func nftChainRules(chain string) int {
	out, err := exec.Command("ip", "netns", "exec", netns, "nft", "list", "chain", "ip", nftShard, chain).CombinedOutput()
	if err != nil {
		return -1
	}
	n := 0
	for _, l := range strings.Split(string(out), "\n") {
		l = strings.TrimSpace(l)
		if l != "" && !strings.HasPrefix(l, "table ") && !strings.HasPrefix(l, "chain ") && l != "}" {
			n++
		}
	}
	return n
}

// foreignNFT is what other software keeps on the node in nftables mode: every iptables
// table (the agent has no rule there in this mode) and an nftables table of its own.
func foreignNFT() string {
	var b strings.Builder
	for _, t := range []string{"filter", "nat", "mangle", "raw"} {
		b.WriteString(iptablesSave(t) + "\n")
	}
	b.WriteString(inNode("nft", "list", "table", "inet", "faultforeign2"))
	return b.String()
}

// tamperNFTCases: the tampering cases with the agent in nftables mode (restarted in it
// for them, and back in iptables mode after), on the steady workload.
func tamperNFTCases() {
	var before string
	BeforeAll(func() {
		base, err := os.ReadFile(filepath.Join(runDir, "agent.yaml"))
		Expect(err).NotTo(HaveOccurred())
		cfg := filepath.Join(runDir, "agent-nftables-tamper.yaml")
		Expect(os.WriteFile(cfg, append(base, []byte("proxyMode: nftables\n")...), 0o644)).To(Succeed())
		switchMode(cfg, func() bool { _, ok := nftSteadyElement(); return ok && iptablesKubeChains() == 0 })
		DeferCleanup(func() {
			switchMode(filepath.Join(runDir, "agent.yaml"), func() bool { return !nftTable() && iptablesKubeChains() > 0 })
		})
		// other software's rules: an iptables chain with a rule, and a table of its own
		inNode("iptables", "-w", "-N", "FAULT-FOREIGN2")
		inNode("iptables", "-w", "-A", "FAULT-FOREIGN2", "-s", "192.0.2.5/32", "-j", "DROP")
		inNode("iptables", "-w", "-A", "INPUT", "-j", "FAULT-FOREIGN2")
		nft("add table inet faultforeign2")
		nft("add chain inet faultforeign2 c { type filter hook input priority 10; }")
		nft("add rule inet faultforeign2 c ip saddr 192.0.2.6 counter drop")
		DeferCleanup(func() {
			_ = exec.Command("ip", "netns", "exec", netns, "iptables", "-w", "-D", "INPUT", "-j", "FAULT-FOREIGN2").Run()
			_ = exec.Command("ip", "netns", "exec", netns, "iptables", "-w", "-F", "FAULT-FOREIGN2").Run()
			_ = exec.Command("ip", "netns", "exec", netns, "iptables", "-w", "-X", "FAULT-FOREIGN2").Run()
			_ = exec.Command("ip", "netns", "exec", netns, "nft", "delete table inet faultforeign2").Run()
		})
		before = foreignNFT()
	})

	It("rebuilds its deleted nftables tables within one sync period", func() {
		d := timeToRepair("nftables: tables deleted", func() { nft("delete table ip " + nftShard); nft("delete table ip nodekeeper") },
			func() bool { _, ok := nftSteadyElement(); return ok })
		Expect(d).To(BeNumerically("<", syncPeriod+5*time.Second))
	})

	It("refills a flushed service chain within one sync period", func() {
		chain, ok := nftSteadyElement()
		Expect(ok).To(BeTrue())
		n := nftChainRules(chain)
		Expect(n).To(BeNumerically(">", 0))
		d := timeToRepair("nftables: service chain flushed", func() { nft("flush chain ip " + nftShard + " " + chain) },
			func() bool { return nftChainRules(chain) == n })
		Expect(d).To(BeNumerically("<", syncPeriod+5*time.Second))
	})

	It("restores a deleted service-ips element within one sync period", func() {
		cip := strings.TrimSuffix(strings.TrimPrefix(clusterIPURL, "http://"), "/")
		d := timeToRepair("nftables: ClusterIP map element deleted", func() {
			nft(fmt.Sprintf("delete element ip "+nftShard+" service-ips { %s . tcp . 80 }", cip))
			_, ok := nftSteadyElement()
			Expect(ok).To(BeFalse())
		}, func() bool { _, ok := nftSteadyElement(); return ok })
		Expect(d).To(BeNumerically("<", syncPeriod+5*time.Second))
	})

	It("removes a foreign rule added to its shard's dispatch chain within one sync period", func() {
		cip := strings.TrimSuffix(strings.TrimPrefix(clusterIPURL, "http://"), "/")
		d := timeToRepair("nftables: foreign rule in the dispatch", func() {
			nft(fmt.Sprintf(`insert rule ip `+nftShard+` nat-prerouting ip daddr %s tcp dport 80 counter return comment "fault: foreign"`, cip))
		}, func() bool { return !strings.Contains(nftTableText(), "fault: foreign") })
		Expect(d).To(BeNumerically("<", syncPeriod+5*time.Second))
	})

	It("never touched the rules of other software", func() {
		if long {
			time.Sleep(syncPeriod + 2*time.Second) // one more periodic sync
		}
		Expect(foreignNFT()).To(Equal(before))
		figure("tamper: nftables foreign rules", "%d lines of other software's iptables rules and nftables table unchanged through the nftables tampering", strings.Count(before, "\n"))
	})
}
