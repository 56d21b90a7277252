//go:build tools

// Package tools names the command s3.sh compiles, so that go.mod keeps its dependencies.
package tools

import _ "github.com/seaweedfs/seaweedfs/weed"
