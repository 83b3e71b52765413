package main

import (
	"math"
	"slices"
)

// percentiles of a distribution, in milliseconds (nearest rank).
type percentiles struct {
	N    int     `json:"n"`
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p999"`
	Max  float64 `json:"max"`
}

func summarizeMicros(values []int64) percentiles {
	if len(values) == 0 {
		return percentiles{}
	}
	slices.Sort(values)
	rank := func(q float64) float64 {
		i := int(math.Ceil(q*float64(len(values)))) - 1
		return float64(values[max(i, 0)]) / 1000
	}
	return percentiles{
		N:    len(values),
		P50:  rank(0.50),
		P90:  rank(0.90),
		P99:  rank(0.99),
		P999: rank(0.999),
		Max:  float64(values[len(values)-1]) / 1000,
	}
}
