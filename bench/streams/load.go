package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

type loadConfig struct {
	target    *url.URL
	streams   int
	ramp      time.Duration
	timeout   time.Duration
	key       string
	model     string
	maxTokens int
	prompt    int // bytes of the user message
}

// streamResult is what one stream saw. Times are microseconds.
type streamResult struct {
	err      string  // "" when the stream ended with [DONE] and no error event
	detail   string  // the error's text
	status   int     // HTTP status, 0 when none arrived
	startLag int64   // how late the stream started against its slot in the ramp
	ttfc     int64   // start (before connecting) to the first content event; -1: none
	gaps     []int32 // between consecutive content events, as they arrived
	delays   []int32 // each content event: written by the mock -> read here (wall clocks)
	events   int
}

// loadReport is printed as JSON: errors by kind and the distributions in milliseconds.
type loadReport struct {
	Streams     int               `json:"streams"`
	OK          int               `json:"ok"`
	Errors      map[string]int    `json:"errors"`
	Statuses    map[string]int    `json:"statuses"`
	Events      int               `json:"content_events"`
	WallSeconds float64           `json:"wall_seconds"`
	TTFC        percentiles       `json:"ttfc_ms"`
	Gap         percentiles       `json:"gap_ms"`
	Delay       percentiles       `json:"delay_ms"`
	StartLag    percentiles       `json:"start_lag_ms"`
	Examples    map[string]string `json:"examples"` // the first error text of each kind
	// Time to first chunk of the streams started in each tenth of the ramp, in start order.
	TTFCByStart []percentiles `json:"ttfc_ms_by_start_decile"`
}

func runLoad(args []string) error {
	fs := flag.NewFlagSet("load", flag.ExitOnError)
	rawURL := fs.String("url", "", "http://127.0.0.1:PORT/v1/chat/completions")
	cfg := loadConfig{}
	fs.IntVar(&cfg.streams, "streams", 100, "streams to open, one connection each")
	fs.DurationVar(&cfg.ramp, "ramp", 0, "start the streams evenly over this time")
	fs.DurationVar(&cfg.timeout, "timeout", 5*time.Minute, "a stream taking longer is cut (error: timeout)")
	fs.StringVar(&cfg.key, "key", "sk-bench-client", "client key (Authorization: Bearer)")
	fs.StringVar(&cfg.model, "model", "bench", "model alias")
	fs.IntVar(&cfg.maxTokens, "max-tokens", 64, "max_tokens in the request body")
	fs.IntVar(&cfg.prompt, "prompt-bytes", 0, "pad the user message to this many bytes")
	if err := fs.Parse(args); err != nil {
		return err
	}
	target, err := url.Parse(*rawURL)
	if err != nil || target.Scheme != "http" || target.Hostname() != "127.0.0.1" || target.Port() == "" {
		return fmt.Errorf("--url %q: need http://127.0.0.1:PORT/path", *rawURL)
	}
	if cfg.streams < 1 {
		return errors.New("--streams must be at least 1")
	}
	cfg.target = target
	report := runStreams(cfg)
	out := json.NewEncoder(os.Stdout)
	out.SetIndent("", " ")
	return out.Encode(report)
}

func requestBytes(cfg loadConfig) []byte {
	content := "Tell me a long story."
	if pad := cfg.prompt - len(content); pad > 0 {
		content += strings.Repeat(" story", pad/6+1)[:pad]
	}
	body := fmt.Sprintf(`{"model":%q,"messages":[{"role":"user","content":%q}],`+
		`"max_tokens":%d,"stream":true}`, cfg.model, content, cfg.maxTokens)
	return fmt.Appendf(nil, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"+
		"Authorization: Bearer %s\r\nAccept: text/event-stream\r\nContent-Length: %d\r\n\r\n%s",
		cfg.target.RequestURI(), cfg.target.Host, cfg.key, len(body), body)
}

func runStreams(cfg loadConfig) loadReport {
	request := requestBytes(cfg)
	results := make([]streamResult, cfg.streams)
	var wg sync.WaitGroup
	begin := time.Now().Add(20 * time.Millisecond)
	for i := range cfg.streams {
		slot := begin
		if cfg.streams > 1 {
			slot = begin.Add(time.Duration(int64(cfg.ramp) * int64(i) / int64(cfg.streams-1)))
		}
		if wait := time.Until(slot); wait > 0 {
			time.Sleep(wait)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = runStream(cfg, request, slot)
		}()
	}
	wg.Wait()
	return summarize(results, time.Since(begin))
}

func micros(d time.Duration) int64 { return int64(d / time.Microsecond) }

func runStream(cfg loadConfig, request []byte, slot time.Time) (res streamResult) {
	start := time.Now()
	res.startLag = micros(start.Sub(slot))
	res.ttfc = -1
	deadline := start.Add(cfg.timeout)
	conn, err := net.DialTimeout("tcp", cfg.target.Host, cfg.timeout)
	if err != nil {
		res.err, res.detail = "connect", err.Error()
		return res
	}
	defer conn.Close()
	_ = conn.SetDeadline(deadline)
	if _, err := conn.Write(request); err != nil {
		res.err, res.detail = classify(err, "write"), err.Error()
		return res
	}
	reader := bufio.NewReaderSize(conn, 16*1024)
	resp, err := http.ReadResponse(reader, nil)
	if err != nil {
		res.err, res.detail = classify(err, "head"), err.Error()
		return res
	}
	defer resp.Body.Close()
	res.status = resp.StatusCode
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, resp.Body)
		res.err = "status_" + strconv.Itoa(resp.StatusCode)
		return res
	}
	res.err, res.detail = readEvents(resp.Body, start, &res)
	return res
}

// readEvents reads an SSE body, timing every content event, until the body ends.
func readEvents(body io.Reader, start time.Time, res *streamResult) (string, string) {
	buf := make([]byte, 16*1024)
	var pending []byte
	var last time.Time
	done, errorEvent := false, false
	for {
		n, err := body.Read(buf)
		if n > 0 {
			now := time.Now()
			wall := now.UnixNano()
			pending = append(pending, buf[:n]...)
			consumed := 0
			for {
				end := bytes.Index(pending[consumed:], []byte("\n\n"))
				if end < 0 {
					break
				}
				event := pending[consumed : consumed+end]
				switch kind, sent := classifyEvent(event); kind {
				case eventDone:
					done = true
				case eventError:
					errorEvent = true
				case eventContent:
					res.events++
					if res.ttfc < 0 {
						res.ttfc = micros(now.Sub(start))
					} else {
						res.gaps = append(res.gaps, int32(micros(now.Sub(last))))
					}
					last = now
					if sent > 0 {
						res.delays = append(res.delays, int32((wall-sent)/1000))
					}
				}
				consumed += end + 2
			}
			pending = pending[:copy(pending, pending[consumed:])]
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return classify(err, "read"), err.Error()
		}
	}
	switch {
	case errorEvent:
		return "error_event", "an SSE error event"
	case !done:
		return "truncated", "the body ended before [DONE]"
	}
	return "", ""
}

const (
	eventOther = iota
	eventContent
	eventDone
	eventError
)

var sentKey = []byte(`"bench_sent_ns":`)

// classifyEvent tells a content event (with the mock's send time, if any) from the usage
// event, [DONE] and an error event (the gateway's, when an upstream stream breaks).
func classifyEvent(event []byte) (int, int64) {
	data, ok := bytes.CutPrefix(event, []byte("data: "))
	if !ok {
		return eventOther, 0
	}
	switch {
	case bytes.Equal(data, []byte("[DONE]")):
		return eventDone, 0
	case bytes.HasPrefix(data, []byte(`{"error"`)):
		return eventError, 0
	case bytes.Contains(data, []byte(`"choices":[]`)):
		return eventOther, 0 // the usage event
	}
	var sent int64
	if i := bytes.Index(data, sentKey); i >= 0 {
		digits := data[i+len(sentKey):]
		for _, c := range digits {
			if c < '0' || c > '9' {
				break
			}
			sent = sent*10 + int64(c-'0')
		}
	}
	return eventContent, sent
}

func classify(err error, what string) string {
	var netErr net.Error
	if errors.As(err, &netErr) && netErr.Timeout() {
		return "timeout"
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return what + "_eof"
	}
	return what + "_error"
}

func summarize(results []streamResult, wall time.Duration) loadReport {
	report := loadReport{
		Streams:     len(results),
		Errors:      map[string]int{},
		Statuses:    map[string]int{},
		Examples:    map[string]string{},
		WallSeconds: wall.Seconds(),
	}
	var ttfc, gaps, delays, lags []int64
	for i := range results {
		r := &results[i]
		if r.err == "" {
			report.OK++
		} else {
			report.Errors[r.err]++
			if _, seen := report.Examples[r.err]; !seen {
				report.Examples[r.err] = r.detail
			}
		}
		if r.status != 0 {
			report.Statuses[strconv.Itoa(r.status)]++
		}
		report.Events += r.events
		lags = append(lags, r.startLag)
		if r.ttfc >= 0 {
			ttfc = append(ttfc, r.ttfc)
		}
		for _, g := range r.gaps {
			gaps = append(gaps, int64(g))
		}
		for _, d := range r.delays {
			delays = append(delays, int64(d))
		}
		r.gaps, r.delays = nil, nil
	}
	report.TTFC = summarizeMicros(ttfc)
	for decile := range 10 {
		var part []int64
		for i := decile * len(results) / 10; i < (decile+1)*len(results)/10; i++ {
			if results[i].ttfc >= 0 {
				part = append(part, results[i].ttfc)
			}
		}
		report.TTFCByStart = append(report.TTFCByStart, summarizeMicros(part))
	}
	report.Gap = summarizeMicros(gaps)
	report.Delay = summarizeMicros(delays)
	report.StartLag = summarizeMicros(lags)
	return report
}
