//go:build tools

// Package tools pins kube-score, which the chart tests run on `helm template`
// output and on the gateway objects the operator renders. It is a module of its
// own so that kube-score's dependencies never move those of the other tools.
package tools

import _ "github.com/zegl/kube-score/cmd/kube-score"
