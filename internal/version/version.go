// Package version carries nodekeeper's version, stamped at build time:
//
//	go build -ldflags "-X github.com/nodekeeper/nodekeeper/internal/version.Version=v0.1.0"
package version

// Version is reported as the node's kubeletVersion and by --version.
var Version = "v0.1.0-dev"
