//go:build tools

// Package tools pins the etcd server that the test harness builds. It is a
// module of its own so that etcd's dependencies never move Kubernetes' ones.
package tools

import _ "go.etcd.io/etcd/server/v3"
