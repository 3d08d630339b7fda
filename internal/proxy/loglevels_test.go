package proxy

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
)

func TestComponentLevelsFilterEachLoggerAndChangeLive(t *testing.T) {
	var out bytes.Buffer
	levels := NewLogLevels(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelDebug - 4}), slog.LevelInfo)
	if err := levels.SetComponents("upstream:debug, http:error"); err != nil {
		t.Fatal(err)
	}
	up, http := levels.Logger("upstream").With("cluster", "c"), levels.Logger("http")
	up.Debug("picked host")
	http.Warn("hidden")
	if got := out.String(); !strings.Contains(got, "level=DEBUG msg=\"picked host\" component=upstream cluster=c") || strings.Contains(got, "hidden") {
		t.Fatalf("output:\n%s", got)
	}
	if err := levels.SetAll("trace"); err != nil {
		t.Fatal(err)
	}
	if !http.Enabled(context.Background(), slog.LevelDebug-4) {
		t.Fatal("SetAll did not reach an existing logger")
	}
	for _, bad := range []string{"upstream", "nosuch:debug", "http:loud"} {
		if err := levels.SetComponents(bad); err == nil {
			t.Errorf("SetComponents(%q) accepted", bad)
		}
	}
	if got := levels.Levels(); len(got) != len(LogComponents) || got[0] != [2]string{"admin", "trace"} {
		t.Fatalf("Levels() = %v", got)
	}
	if l, err := ParseLevel("WARN"); err != nil || l != slog.LevelWarn {
		t.Fatalf("ParseLevel(WARN) = %v %v", l, err)
	}
}
