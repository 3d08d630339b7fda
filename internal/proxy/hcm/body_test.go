package hcm

import (
	"errors"
	"io"
	"strings"
	"testing"
)

func TestReplayBodyGivesALaterTryTheWholeBody(t *testing.T) {
	b := newReplayBody(io.NopCloser(strings.NewReader("hello world")))
	b.Record(1 << 10)
	first := b.Attempt()
	buf := make([]byte, 5)
	if n, _ := first.Read(buf); string(buf[:n]) != "hello" {
		t.Fatalf("first try read %q", buf[:n])
	}
	second := b.Attempt()
	if _, err := first.Read(buf); !errors.Is(err, errAttemptOver) {
		t.Fatalf("abandoned try still reads: %v", err)
	}
	all, err := io.ReadAll(second)
	if err != nil || string(all) != "hello world" {
		t.Fatalf("second try read %q, %v", all, err)
	}
	if !b.Replayable() || b.Received() != 11 {
		t.Fatalf("replayable %v received %d", b.Replayable(), b.Received())
	}
}

func TestReplayBodyOverBufferLimitIsNotReplayable(t *testing.T) {
	b := newReplayBody(io.NopCloser(strings.NewReader(strings.Repeat("x", 100))))
	b.Record(10)
	if all, err := io.ReadAll(b.Attempt()); err != nil || len(all) != 100 {
		t.Fatalf("first try read %d bytes, %v", len(all), err)
	}
	if b.Replayable() {
		t.Fatal("a body past the buffer limit claims to be replayable")
	}
	if _, err := b.Attempt().Read(make([]byte, 1)); !errors.Is(err, errAttemptOver) {
		t.Fatalf("replay of an overflowed body: %v", err)
	}
}
