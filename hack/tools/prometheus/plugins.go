// Prometheus's service-discovery plugin list, as `make plugins` would generate it from a
// plugins.yml naming only Kubernetes (file and HTTP discovery are always built in, see
// plugins/minimum.go). hack/build-tools.sh builds cmd/prometheus from a copy of the pinned
// module with this file in place of plugins/plugins.go: Debian's prometheus package leaves
// Kubernetes discovery out, and the cloud providers' SDKs are not needed here.

package plugins

import (
	_ "github.com/prometheus/prometheus/discovery/kubernetes" // Register kubernetes plugin.
)
