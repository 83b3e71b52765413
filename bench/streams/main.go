// Command streambench is the compiled half of tiergate's stream benchmarks (bench/streams,
// bench/routing): a slow-streaming OpenAI-compatible mock upstream and a load generator that
// opens many long SSE streams and measures them. Both talk to 127.0.0.1 only.
//
//	streambench mock --listen 127.0.0.1:PORT [--chunks N --interval D --ttft-p50 D --ttft-p99 D]
//	streambench load --url http://127.0.0.1:PORT/v1/chat/completions --streams N --ramp D
//	streambench version
//
// The load generator prints one JSON object (see loadReport); the mock serves GET /stats.
package main

import (
	"fmt"
	"os"
)

// version is stamped by build.sh with the hash of this module's source.
var version = "dev"

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "mock":
		err = runMock(os.Args[2:])
	case "load":
		err = runLoad(os.Args[2:])
	case "version":
		fmt.Println(version)
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "streambench %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: streambench mock|load|version [flags] (-h for the flags)")
	os.Exit(2)
}
