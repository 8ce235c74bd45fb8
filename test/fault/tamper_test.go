package fault

import (
	"fmt"
	"os/exec"
	"regexp"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/nodekeeper/nodekeeper/internal/netnstest"
)

// iptablesSave is the node's iptables (the variant the agent uses: iptables-nft here)
// without counters and comments of generation time.
func iptablesSave(table string) string {
	out := inNode("iptables-save", "-t", table)
	var keep []string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "#") {
			continue
		}
		keep = append(keep, regexp.MustCompile(`\[\d+:\d+\]`).ReplaceAllString(l, ""))
	}
	return strings.Join(keep, "\n")
}

// foreign is what other software keeps on the node: lines of every table that are not
// the agent's (no KUBE- chain, no kubernetes comment), and an nftables table of its own.
func foreign() string {
	var b strings.Builder
	for _, t := range []string{"filter", "nat", "mangle", "raw"} {
		for _, l := range strings.Split(iptablesSave(t), "\n") {
			if !strings.Contains(l, "KUBE-") {
				b.WriteString(l + "\n")
			}
		}
	}
	b.WriteString(inNode("nft", "list", "table", "inet", "faultforeign"))
	return b.String()
}

// restoreNat loads a nat table as given, replacing the node's (atomically).
func restoreNat(rules string) {
	cmd := exec.Command("ip", "netns", "exec", netns, "iptables-restore", "-w")
	cmd.Stdin = strings.NewReader(rules)
	out, err := cmd.CombinedOutput()
	Expect(err).NotTo(HaveOccurred(), "iptables-restore: %s\n%s", out, rules)
}

func dropLines(s string, match func(string) bool) string {
	var keep []string
	for _, l := range strings.Split(s, "\n") {
		if !match(l) {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n") + "\n"
}

// svcChain is the KUBE-SVC chain of default/steady:http.
func svcChain() string {
	m := regexp.MustCompile(`(?m)^-A KUBE-SVCS?\S* .*"default/steady:http cluster IP".* -j (KUBE-SVC-\w+)$`).FindStringSubmatch(iptablesSave("nat"))
	Expect(m).NotTo(BeNil(), "no KUBE-SVC chain for default/steady:http")
	return m[1]
}

// timeToRepair applies a tampering and measures how long until the ClusterIP answers
// again and check holds; it also counts requests that failed meanwhile.
func timeToRepair(name string, tamper func(), check func() bool) time.Duration {
	Eventually(func() (string, error) { return netnstest.Get(netns, clusterIPURL) }, time.Minute, 200*time.Millisecond).Should(HavePrefix("steady-"))
	t0 := time.Now()
	tamper()
	broken := false
	Eventually(func() bool {
		_, err := netnstest.Get(netns, clusterIPURL)
		if err != nil {
			broken = true
		}
		return err == nil && check()
	}, 4*syncPeriod, 100*time.Millisecond).Should(BeTrue(), "%s: not repaired", name)
	d := time.Since(t0)
	figure("tamper: "+name, "repaired in %v (sync period %v); traffic broken meanwhile: %v", d.Round(100*time.Millisecond), syncPeriod, broken)
	return d
}

// tamperCases run inside the Faults container, on its steady workload.
func tamperCases() {
	var before string
	BeforeAll(func() {
		// other software's rules: a chain and a rule in filter, a rule in nat (hack/run.sh's
		// masquerade is one already) and an nftables table of its own
		inNode("iptables", "-w", "-N", "FAULT-FOREIGN")
		inNode("iptables", "-w", "-A", "FAULT-FOREIGN", "-s", "192.0.2.1/32", "-j", "DROP")
		inNode("iptables", "-w", "-A", "INPUT", "-j", "FAULT-FOREIGN")
		inNode("iptables", "-w", "-t", "nat", "-A", "PREROUTING", "-s", "192.0.2.2/32", "-j", "RETURN")
		inNode("iptables", "-w", "-t", "mangle", "-A", "PREROUTING", "-s", "192.0.2.3/32", "-j", "MARK", "--set-mark", "0x100")
		inNode("nft", "add table inet faultforeign")
		inNode("nft", "add chain inet faultforeign c { type filter hook input priority 10; }")
		inNode("nft", "add rule inet faultforeign c ip saddr 192.0.2.4 counter drop")
		before = foreign()
		DeferCleanup(func() {
			_ = exec.Command("ip", "netns", "exec", netns, "iptables", "-w", "-D", "INPUT", "-j", "FAULT-FOREIGN").Run()
			_ = exec.Command("ip", "netns", "exec", netns, "iptables", "-w", "-F", "FAULT-FOREIGN").Run()
			_ = exec.Command("ip", "netns", "exec", netns, "iptables", "-w", "-X", "FAULT-FOREIGN").Run()
			_ = exec.Command("ip", "netns", "exec", netns, "iptables", "-w", "-t", "nat", "-D", "PREROUTING", "-s", "192.0.2.2/32", "-j", "RETURN").Run()
			_ = exec.Command("ip", "netns", "exec", netns, "iptables", "-w", "-t", "mangle", "-D", "PREROUTING", "-s", "192.0.2.3/32", "-j", "MARK", "--set-mark", "0x100").Run()
			_ = exec.Command("ip", "netns", "exec", netns, "nft", "delete table inet faultforeign").Run()
		})
	})

	It("restores a flushed KUBE-SERVICES chain within one sync period", func() {
		d := timeToRepair("KUBE-SERVICES flushed", func() { inNode("iptables", "-w", "-t", "nat", "-F", "KUBE-SERVICES") },
			func() bool { return strings.Contains(iptablesSave("nat"), "default/steady:http cluster IP") })
		Expect(d).To(BeNumerically("<", syncPeriod+5*time.Second))
	})

	It("restores a deleted KUBE-SVC chain (and the jumps to it) within one sync period", func() {
		chain := svcChain()
		d := timeToRepair("KUBE-SVC chain deleted", func() {
			restoreNat(dropLines(iptablesSave("nat"), func(l string) bool { return strings.Contains(l, chain) }))
			Expect(iptablesSave("nat")).NotTo(ContainSubstring(chain))
		}, func() bool { return strings.Contains(iptablesSave("nat"), ":"+chain) })
		Expect(d).To(BeNumerically("<", syncPeriod+5*time.Second))
	})

	It("removes a foreign rule added to its chain within one sync period", func() {
		cip := strings.TrimSuffix(strings.TrimPrefix(clusterIPURL, "http://"), "/")
		rule := []string{"-d", cip + "/32", "-p", "tcp", "-m", "comment", "--comment", "fault: foreign", "-j", "RETURN"}
		d := timeToRepair("foreign rule in KUBE-SERVICES", func() {
			inNode(append([]string{"iptables", "-w", "-t", "nat", "-I", "KUBE-SERVICES", "1"}, rule...)...)
		}, func() bool { return !strings.Contains(iptablesSave("nat"), "fault: foreign") })
		Expect(d).To(BeNumerically("<", syncPeriod+5*time.Second))
	})

	It("rebuilds every one of its nat chains wiped from the table within one sync period", func() {
		d := timeToRepair("all KUBE- nat chains and jumps wiped", func() {
			restoreNat(dropLines(iptablesSave("nat"), func(l string) bool { return strings.Contains(l, "KUBE-") }))
		}, func() bool { return strings.Contains(iptablesSave("nat"), "default/steady:http cluster IP") })
		Expect(d).To(BeNumerically("<", syncPeriod+5*time.Second))
	})

	It("never touched the rules of other tables and chains", func() {
		if long {
			time.Sleep(syncPeriod + 2*time.Second) // one more periodic sync
		}
		Expect(foreign()).To(Equal(before))
		figure("tamper: foreign rules", "%d lines of other software's iptables rules and nftables table unchanged through the tampering and %v of syncs", strings.Count(before, "\n"), fmt.Sprint(syncPeriod))
	})
}
