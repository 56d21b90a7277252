//go:build tools

// Package tools names the commands build.sh compiles, so that go.mod keeps their dependencies.
package tools

import (
	_ "sigs.k8s.io/kueue/cmd/kueue"
)
