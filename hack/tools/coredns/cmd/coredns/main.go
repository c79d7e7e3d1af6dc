// Command coredns runs CoreDNS with its standard plugin set (the same entry point as the
// upstream coredns.go), so the local node's pods resolve Service names.
package main

import (
	_ "github.com/coredns/coredns/core/plugin" // every plugin of the release, incl. kubernetes
	"github.com/coredns/coredns/coremain"
)

func main() {
	coremain.Run()
}
