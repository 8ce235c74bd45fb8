package main

import (
	"reflect"
	"testing"
	"time"
)

func TestParseWget(t *testing.T) {
	cases := []struct {
		args []string
		want wgetOpts
	}{
		{[]string{"-qO-", "http://a/"}, wgetOpts{quiet: true, out: "-", urls: []string{"http://a/"}}},
		{[]string{"-q", "-O", "-", "-T", "2", "http://a/"}, wgetOpts{quiet: true, out: "-", timeout: 2 * time.Second, urls: []string{"http://a/"}}},
		{[]string{"-qO", "f.txt", "--timeout=1.5", "a:8080/x"}, wgetOpts{quiet: true, out: "f.txt", timeout: 1500 * time.Millisecond, urls: []string{"a:8080/x"}}},
		{[]string{"--spider", "-S", "-T5", "--header", "Host: h", "http://a/"}, wgetOpts{spider: true, headers: true, timeout: 5 * time.Second, extra: []string{"Host: h"}, urls: []string{"http://a/"}}},
	}
	for _, c := range cases {
		got, err := parseWget(c.args)
		if err != nil {
			t.Errorf("%v: %v", c.args, err)
			continue
		}
		if c.want.timeout == 0 {
			c.want.timeout = 900 * time.Second
		}
		c.want.agent = "Wget"
		if !reflect.DeepEqual(*got, c.want) {
			t.Errorf("%v:\n got %+v\nwant %+v", c.args, *got, c.want)
		}
	}
	for _, bad := range [][]string{{}, {"-O"}, {"-Z", "http://a/"}, {"--nope", "http://a/"}} {
		if _, err := parseWget(bad); err == nil {
			t.Errorf("%v: no error", bad)
		}
	}
}
