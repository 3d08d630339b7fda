package localratelimit

import (
	"testing"
	"time"
)

func TestBucketRefillsWholeIntervalsLazilyUpToMax(t *testing.T) {
	t0 := time.Unix(1000, 0)
	b := NewBucket(3, 2, time.Second, t0)
	for i := range 3 {
		if !b.Take(t0) {
			t.Fatalf("token %d refused from a full bucket", i)
		}
	}
	if b.Take(t0.Add(999 * time.Millisecond)) {
		t.Fatal("took a token before the first fill")
	}
	// One fill of 2 tokens at 1s; the partial interval carries over to the next fill.
	now := t0.Add(1500 * time.Millisecond)
	got := 0
	for range 3 {
		if b.Take(now) {
			got++
		}
	}
	if got != 2 {
		t.Fatalf("one fill gave %d tokens, want tokens_per_fill 2", got)
	}
	if !b.Take(t0.Add(2 * time.Second)) {
		t.Fatal("the fill at 2s was lost to the partial interval")
	}
	// A long idle period fills to max_tokens, no more.
	later := t0.Add(time.Hour)
	n := 0
	for b.Take(later) {
		n++
	}
	if n != 3 {
		t.Fatalf("after an idle hour took %d tokens, want max_tokens 3", n)
	}
}
