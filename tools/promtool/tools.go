//go:build tools

// Package tools pins promtool, which the tests run on the PrometheusRules the
// operator renders (`promtool check rules`, `promtool test rules`). It is a
// module of its own so that Prometheus's dependencies never move those of the
// other tools.
package tools

import _ "github.com/prometheus/prometheus/cmd/promtool"
