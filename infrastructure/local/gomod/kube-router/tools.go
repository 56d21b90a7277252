//go:build tools

// Package tools names the commands build.sh compiles, so that go.mod keeps their dependencies.
package tools

import (
	_ "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router"
)
