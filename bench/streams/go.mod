// streambench: a slow-streaming OpenAI-compatible mock upstream and an SSE load generator for
// tiergate's stream benchmarks. Standard library only (no go.sum); built by build.sh.
module tiergate.dev/bench/streams

go 1.26
