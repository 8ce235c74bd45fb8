// Command nktools is a static multi-call helper for the local busybox image that
// hack/cri-up.sh builds (make run, the e2e suite): `wget` and `nslookup`, picked by the
// name it is called as (or the first argument), in place of Debian's busybox-static 1.35
// applets. Those are built against glibc statically: looking a name up makes glibc load
// NSS modules the image does not have, and busybox's wget then dies with SIGSEGV (exit 139);
// its nslookup asks for the name as given, without the resolv.conf search list, so
// `nslookup kubernetes.default` fails where a pod's own lookups succeed. These use Go's
// resolver, which reads /etc/resolv.conf (nameservers, search, ndots) as libc does.
//
// wget:     wget [-q] [-O FILE|-] [-T SECONDS] [--timeout=SECONDS] [-S] [--spider|-s]
//
//	[-U AGENT] [--header 'K: V'] URL...   (busybox's options; combined short flags such as -qO-)
//
// nslookup: nslookup [-type=A|AAAA] NAME [SERVER]
package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

func main() {
	name := filepath.Base(os.Args[0])
	args := os.Args[1:]
	if name != "wget" && name != "nslookup" && len(args) > 0 {
		name, args = args[0], args[1:]
	}
	switch name {
	case "wget":
		os.Exit(wget(args, os.Stdout, os.Stderr))
	case "nslookup":
		os.Exit(nslookup(args, os.Stdout, os.Stderr))
	default:
		fmt.Fprintln(os.Stderr, "usage: nktools wget|nslookup ARGS (or call it as wget / nslookup)")
		os.Exit(2)
	}
}

type wgetOpts struct {
	quiet, spider, headers bool
	out, agent             string
	timeout                time.Duration
	extra                  []string
	urls                   []string
}

// parseWget reads busybox wget's command line: short flags may be combined (-qO-, -qO -),
// a flag's value may follow it or be attached; long flags take --name=value or --name value.
func parseWget(args []string) (*wgetOpts, error) {
	o := &wgetOpts{timeout: 900 * time.Second, agent: "Wget"}
	value := func(i *int, rest string) (string, error) {
		if rest != "" {
			return rest, nil
		}
		if *i+1 >= len(args) {
			return "", fmt.Errorf("option requires an argument: %s", args[*i])
		}
		*i++
		return args[*i], nil
	}
	setTimeout := func(v string) error {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return fmt.Errorf("invalid timeout %q", v)
		}
		o.timeout = time.Duration(f * float64(time.Second))
		return nil
	}
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case strings.HasPrefix(a, "--"):
			k, v, hasV := strings.Cut(a[2:], "=")
			get := func() (string, error) {
				if hasV {
					return v, nil
				}
				return value(&i, "")
			}
			switch k {
			case "quiet":
				o.quiet = true
			case "spider":
				o.spider = true
			case "server-response":
				o.headers = true
			case "output-document", "timeout", "user-agent", "header":
				val, err := get()
				if err != nil {
					return nil, err
				}
				switch k {
				case "output-document":
					o.out = val
				case "timeout":
					if err := setTimeout(val); err != nil {
						return nil, err
					}
				case "user-agent":
					o.agent = val
				case "header":
					o.extra = append(o.extra, val)
				}
			case "no-check-certificate", "continue", "no-verbose":
			default:
				return nil, fmt.Errorf("unrecognized option '%s'", a)
			}
		case strings.HasPrefix(a, "-") && len(a) > 1:
			for j := 1; j < len(a); j++ {
				c, rest := a[j], a[j+1:]
				switch c {
				case 'q':
					o.quiet = true
				case 's':
					o.spider = true
				case 'S':
					o.headers = true
				case 'c':
				case 'O', 'T', 'U', 'Y':
					val, err := value(&i, rest)
					if err != nil {
						return nil, err
					}
					switch c {
					case 'O':
						o.out = val
					case 'T':
						if err := setTimeout(val); err != nil {
							return nil, err
						}
					case 'U':
						o.agent = val
					}
					j = len(a)
				default:
					return nil, fmt.Errorf("invalid option -- '%c'", c)
				}
			}
		default:
			o.urls = append(o.urls, a)
		}
	}
	if len(o.urls) == 0 {
		return nil, fmt.Errorf("missing URL")
	}
	return o, nil
}

func wget(args []string, stdout, stderr io.Writer) int {
	o, err := parseWget(args)
	if err != nil {
		fmt.Fprintln(stderr, "wget:", err)
		return 1
	}
	client := &http.Client{Timeout: o.timeout}
	for _, u := range o.urls {
		if !strings.Contains(u, "://") {
			u = "http://" + u
		}
		method := http.MethodGet
		if o.spider {
			method = http.MethodHead
		}
		req, err := http.NewRequest(method, u, nil)
		if err != nil {
			fmt.Fprintln(stderr, "wget:", err)
			return 1
		}
		req.Header.Set("User-Agent", o.agent)
		for _, h := range o.extra {
			if k, v, ok := strings.Cut(h, ":"); ok {
				req.Header.Set(strings.TrimSpace(k), strings.TrimSpace(v))
			}
		}
		if !o.quiet {
			fmt.Fprintf(stderr, "Connecting to %s\n", req.URL.Host)
		}
		resp, err := client.Do(req)
		if err != nil {
			fmt.Fprintln(stderr, "wget: can't connect to remote host:", err)
			return 1
		}
		if o.headers {
			fmt.Fprintf(stderr, "  %s %s\n", resp.Proto, resp.Status)
			for k, vs := range resp.Header {
				for _, v := range vs {
					fmt.Fprintf(stderr, "  %s: %s\n", k, v)
				}
			}
		}
		if resp.StatusCode >= 400 {
			resp.Body.Close()
			fmt.Fprintf(stderr, "wget: server returned error: %s %s\n", resp.Proto, resp.Status)
			return 1
		}
		if o.spider {
			resp.Body.Close()
			if !o.quiet {
				fmt.Fprintln(stderr, "remote file exists")
			}
			continue
		}
		w, closeOut, err := output(o.out, req.URL.Path, stdout)
		if err != nil {
			resp.Body.Close()
			fmt.Fprintln(stderr, "wget:", err)
			return 1
		}
		_, err = io.Copy(w, resp.Body)
		resp.Body.Close()
		if cerr := closeOut(); err == nil {
			err = cerr
		}
		if err != nil {
			fmt.Fprintln(stderr, "wget:", err)
			return 1
		}
	}
	return 0
}

func output(name, urlPath string, stdout io.Writer) (io.Writer, func() error, error) {
	if name == "-" {
		return stdout, func() error { return nil }, nil
	}
	if name == "" {
		name = path.Base(urlPath)
		if name == "/" || name == "." || name == "" {
			name = "index.html"
		}
	}
	f, err := os.Create(name)
	if err != nil {
		return nil, nil, err
	}
	return f, f.Close, nil
}

func nslookup(args []string, stdout, stderr io.Writer) int {
	var name, server string
	network := "ip"
	for _, a := range args {
		switch {
		case strings.HasPrefix(a, "-type=") || strings.HasPrefix(a, "-query="):
			switch strings.ToUpper(a[strings.Index(a, "=")+1:]) {
			case "A":
				network = "ip4"
			case "AAAA":
				network = "ip6"
			}
		case strings.HasPrefix(a, "-"):
		case name == "":
			name = a
		default:
			server = a
		}
	}
	if name == "" {
		fmt.Fprintln(stderr, "usage: nslookup [-type=A|AAAA] NAME [SERVER]")
		return 1
	}
	r := &net.Resolver{PreferGo: true}
	if server == "" {
		server = firstNameserver()
	} else {
		s := server
		r.Dial = func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, net.JoinHostPort(s, "53"))
		}
	}
	fmt.Fprintf(stdout, "Server:\t\t%s\nAddress:\t%s\n\n", server, net.JoinHostPort(server, "53"))
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if ip := net.ParseIP(name); ip != nil {
		names, err := r.LookupAddr(ctx, name)
		if err != nil {
			fmt.Fprintf(stdout, "** server can't find %s: %s\n", name, reason(err))
			return 1
		}
		for _, n := range names {
			fmt.Fprintf(stdout, "%s\tname = %s\n", name, n)
		}
		return 0
	}
	ips, err := r.LookupIP(ctx, network, name)
	if err != nil {
		fmt.Fprintf(stdout, "** server can't find %s: %s\n", name, reason(err))
		return 1
	}
	// the name that answered, after the search list (Go's resolver reports it as the CNAME)
	fqdn := name
	if c, err := r.LookupCNAME(ctx, name); err == nil && c != "" {
		fqdn = strings.TrimSuffix(c, ".")
	}
	fmt.Fprintf(stdout, "Name:\t%s\n", fqdn)
	for _, ip := range ips {
		fmt.Fprintf(stdout, "Address: %s\n", ip)
	}
	return 0
}

func reason(err error) string {
	if de, ok := err.(*net.DNSError); ok {
		if de.IsNotFound {
			return "NXDOMAIN"
		}
		if de.IsTimeout {
			return "timed out"
		}
	}
	return err.Error()
}

func firstNameserver() string {
	b, err := os.ReadFile("/etc/resolv.conf")
	if err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			f := strings.Fields(l)
			if len(f) >= 2 && f[0] == "nameserver" {
				return f[1]
			}
		}
	}
	return "127.0.0.1"
}
