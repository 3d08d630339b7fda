//go:build pprof

package main

// Profiling build (go build -tags pprof): TRELLIS_PPROF_ADDR=127.0.0.1:6060 serves net/http/pprof
// there, for profiling the control plane under load (bench-controlplane). Never part of a normal build.

import (
	"net/http"
	_ "net/http/pprof" // registers the handlers on http.DefaultServeMux
	"os"
)

func init() {
	if addr := os.Getenv("TRELLIS_PPROF_ADDR"); addr != "" {
		go func() { _ = http.ListenAndServe(addr, nil) }()
	}
}
