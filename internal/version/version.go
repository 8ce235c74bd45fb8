// Package version carries nodekeeper's version, stamped at build time by the Makefile:
//
//	go build -ldflags "-X github.com/nodekeeper/nodekeeper/internal/version.Version=v0.1.0 \
//	  -X github.com/nodekeeper/nodekeeper/internal/version.Commit=$(git rev-parse HEAD) \
//	  -X github.com/nodekeeper/nodekeeper/internal/version.BuildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
//
// A plain `go build` in a git checkout still gets the commit and its time from the VCS
// information Go embeds (vcs.revision, vcs.time, vcs.modified).
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Version is reported as the node's kubeletVersion and by --version.
var Version = "v0.1.0-dev"

// Commit is the source commit the binary was built from ("unknown" when not known);
// BuildDate the time of the build (RFC 3339, UTC).
var (
	Commit    = ""
	BuildDate = ""
)

// Info is what --version prints.
type Info struct {
	Version, Commit, BuildDate, GoVersion, Platform string
}

// Get returns the build's version information, filling what the linker did not stamp
// from the Go build information when it has it.
func Get() Info {
	i := Info{Version: Version, Commit: Commit, BuildDate: BuildDate, GoVersion: runtime.Version(),
		Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if bi, ok := debug.ReadBuildInfo(); ok {
		settings := map[string]string{}
		for _, s := range bi.Settings {
			settings[s.Key] = s.Value
		}
		if i.Commit == "" && settings["vcs.revision"] != "" {
			i.Commit = settings["vcs.revision"]
			if settings["vcs.modified"] == "true" {
				i.Commit += "-dirty"
			}
		}
		if i.BuildDate == "" {
			i.BuildDate = settings["vcs.time"]
		}
	}
	if i.Commit == "" {
		i.Commit = "unknown"
	}
	if i.BuildDate == "" {
		i.BuildDate = "unknown"
	}
	return i
}

// String is the multi-line text of --version; its first line is "nodekeeper <version>".
func (i Info) String() string {
	return fmt.Sprintf("nodekeeper %s\n  commit:     %s\n  build date: %s\n  go:         %s %s\n",
		i.Version, i.Commit, i.BuildDate, i.GoVersion, i.Platform)
}
