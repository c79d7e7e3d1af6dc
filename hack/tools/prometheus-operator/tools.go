//go:build tools

// Keeps the two commands' dependencies in go.mod / go.sum (`go mod tidy`).
package tools

import (
	_ "github.com/prometheus-operator/prometheus-operator/cmd/operator"
	_ "github.com/prometheus-operator/prometheus-operator/cmd/prometheus-config-reloader"
)
