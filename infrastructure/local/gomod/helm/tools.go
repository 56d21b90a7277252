//go:build tools

// Package tools names the commands build.sh compiles, so that go.mod keeps their dependencies.
package tools

import (
	_ "helm.sh/helm/v4/cmd/helm"
)
