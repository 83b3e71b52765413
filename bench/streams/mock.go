package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// z99 is the standard normal's 99th percentile: a log-normal delay with median m and 99th
// percentile p has sigma = ln(p/m) / z99.
const z99 = 2.3263478740408408

type mockShape struct {
	chunks       int           // content events per answer
	interval     time.Duration // between content events
	ttftMedian   time.Duration // delay before the first content event: median ...
	ttftP99      time.Duration // ... and 99th percentile of a log-normal (equal: constant)
	promptTokens int
}

// mockStats counts what a provider would bill: every request's prompt, and the completion
// tokens actually sent (a stream the client leaves early is billed up to that point).
type mockStats struct {
	Requests         atomic.Int64
	Completed        atomic.Int64
	Aborted          atomic.Int64
	CompletionTokens atomic.Int64
	PromptTokens     atomic.Int64
	Active           atomic.Int64
}

type mock struct {
	shape mockShape
	sigma float64
	stats mockStats
	mu    sync.Mutex
	rng   *rand.Rand
}

func runMock(args []string) error {
	fs := flag.NewFlagSet("mock", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:0", "address to listen on (127.0.0.1 only)")
	shape := mockShape{}
	fs.IntVar(&shape.chunks, "chunks", 10, "content events per answer (the token count)")
	fs.DurationVar(&shape.interval, "interval", 100*time.Millisecond, "time between content events")
	fs.DurationVar(&shape.ttftMedian, "ttft-p50", 0, "median delay before the first content event")
	fs.DurationVar(&shape.ttftP99, "ttft-p99", 0, "its 99th percentile (log-normal; 0 or = p50: constant)")
	fs.IntVar(&shape.promptTokens, "prompt-tokens", 100, "prompt tokens reported (and billed) per request; 0: the request body's bytes / 4")
	seed := fs.Uint64("seed", 1, "seed of the delay distribution")
	if err := fs.Parse(args); err != nil {
		return err
	}
	host, _, err := net.SplitHostPort(*listen)
	if err != nil || host != "127.0.0.1" {
		return fmt.Errorf("--listen %q: only 127.0.0.1 is allowed", *listen)
	}
	if shape.chunks < 1 || shape.interval < 0 || shape.promptTokens < 0 {
		return errors.New("--chunks must be at least 1, --interval and --prompt-tokens not negative")
	}
	m := &mock{shape: shape, rng: rand.New(rand.NewPCG(*seed, 0x7469657267617465))}
	if shape.ttftMedian > 0 && shape.ttftP99 > shape.ttftMedian {
		m.sigma = math.Log(float64(shape.ttftP99)/float64(shape.ttftMedian)) / z99
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	server := &http.Server{
		Handler:           m,
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       120 * time.Second,
		ErrorLog:          log.New(os.Stderr, "mock: ", log.LstdFlags),
	}
	// The driver reads the port from this line.
	fmt.Printf("listening %s\n", ln.Addr())
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-stop
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = server.Shutdown(ctx)
		_ = server.Close()
	}()
	if err := server.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func (m *mock) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/stats":
		m.serveStats(w)
	case r.Method == http.MethodPost && r.URL.Path == "/v1/chat/completions":
		m.serveChat(w, r)
	default:
		http.Error(w, `{"error":{"message":"not found","type":"invalid_request_error"}}`, http.StatusNotFound)
	}
}

func (m *mock) serveStats(w http.ResponseWriter) {
	w.Header().Set("content-type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]int64{
		"requests":          m.stats.Requests.Load(),
		"completed":         m.stats.Completed.Load(),
		"aborted":           m.stats.Aborted.Load(),
		"active":            m.stats.Active.Load(),
		"prompt_tokens":     m.stats.PromptTokens.Load(),
		"completion_tokens": m.stats.CompletionTokens.Load(),
	})
}

// firstTokenDelay draws the delay before the first content event.
func (m *mock) firstTokenDelay() time.Duration {
	if m.sigma == 0 {
		return m.shape.ttftMedian
	}
	m.mu.Lock()
	z := m.rng.NormFloat64()
	m.mu.Unlock()
	return time.Duration(float64(m.shape.ttftMedian) * math.Exp(m.sigma*z))
}

type chatRequest struct {
	Model  string `json:"model"`
	Stream bool   `json:"stream"`
}

func (m *mock) serveChat(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	var req chatRequest
	if err == nil {
		err = json.Unmarshal(body, &req)
	}
	if err != nil {
		http.Error(w, `{"error":{"message":"bad request body","type":"invalid_request_error"}}`, http.StatusBadRequest)
		return
	}
	prompt := m.shape.promptTokens
	if prompt == 0 {
		prompt = max(1, len(body)/4)
	}
	m.stats.Requests.Add(1)
	m.stats.PromptTokens.Add(int64(prompt))
	m.stats.Active.Add(1)
	defer m.stats.Active.Add(-1)
	start := time.Now()
	first := start.Add(m.firstTokenDelay())
	if req.Stream {
		m.stream(w, r.Context(), req.Model, prompt, first)
	} else {
		m.plain(w, r.Context(), req.Model, prompt, first)
	}
}

// sleepUntil waits for the wall-clock instant at, or returns false when ctx ends first.
func sleepUntil(ctx context.Context, timer *time.Timer, at time.Time) bool {
	wait := time.Until(at)
	if wait <= 0 {
		return ctx.Err() == nil
	}
	timer.Reset(wait)
	select {
	case <-timer.C:
		return true
	case <-ctx.Done():
		timer.Stop()
		return false
	}
}

func (m *mock) plain(w http.ResponseWriter, ctx context.Context, model string, prompt int, first time.Time) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	if !sleepUntil(ctx, timer, first.Add(time.Duration(m.shape.chunks-1)*m.shape.interval)) {
		m.stats.Aborted.Add(1)
		return
	}
	n := m.shape.chunks
	body := fmt.Appendf(nil, `{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,`+
		`"model":%q,"choices":[{"index":0,"message":{"role":"assistant","content":"bench"},`+
		`"finish_reason":"stop"}],"usage":{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d}}`,
		model, prompt, n, prompt+n)
	w.Header().Set("content-type", "application/json")
	w.Header().Set("content-length", fmt.Sprint(len(body)))
	if _, err := w.Write(body); err != nil {
		m.stats.Aborted.Add(1)
		return
	}
	m.stats.CompletionTokens.Add(int64(n))
	m.stats.Completed.Add(1)
}

// stream sends the response head at once, the first content event at first, then one every
// interval; the last one carries the usage event and [DONE] in the same write. Each content
// event holds the wall-clock time it was written (bench_sent_ns) so the load generator can
// measure every chunk's delay.
func (m *mock) stream(w http.ResponseWriter, ctx context.Context, model string, prompt int, first time.Time) {
	control := http.NewResponseController(w)
	w.Header().Set("content-type", "text/event-stream")
	w.Header().Set("cache-control", "no-cache")
	w.WriteHeader(http.StatusOK)
	if control.Flush() != nil {
		m.stats.Aborted.Add(1)
		return
	}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	buf := make([]byte, 0, 512)
	n := m.shape.chunks
	for k := 0; k < n; k++ {
		if !sleepUntil(ctx, timer, first.Add(time.Duration(k)*m.shape.interval)) {
			m.stats.Aborted.Add(1)
			return
		}
		finish := "null"
		if k == n-1 {
			finish = `"stop"`
		}
		buf = fmt.Appendf(buf[:0], `data: {"id":"chatcmpl-bench","object":"chat.completion.chunk",`+
			`"created":1700000000,"model":%q,"bench_sent_ns":%d,"choices":[{"index":0,`+
			`"delta":{"content":"tok%d "},"finish_reason":%s}]}`+"\n\n",
			model, time.Now().UnixNano(), k, finish)
		if k == n-1 {
			buf = fmt.Appendf(buf, `data: {"id":"chatcmpl-bench","object":"chat.completion.chunk",`+
				`"created":1700000000,"model":%q,"choices":[],"usage":{"prompt_tokens":%d,`+
				`"completion_tokens":%d,"total_tokens":%d}}`+"\n\ndata: [DONE]\n\n",
				model, prompt, n, prompt+n)
		}
		if _, err := w.Write(buf); err != nil {
			m.stats.Aborted.Add(1)
			return
		}
		if err := control.Flush(); err != nil {
			m.stats.Aborted.Add(1)
			return
		}
		m.stats.CompletionTokens.Add(1)
	}
	m.stats.Completed.Add(1)
}
