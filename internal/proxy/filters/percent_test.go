package filters

import (
	"testing"

	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
)

func TestFractionOfNormalisesToMillionths(t *testing.T) {
	for _, tc := range []struct {
		p    *typev3.FractionalPercent
		want Fraction
	}{
		{nil, 0},
		{&typev3.FractionalPercent{Numerator: 25}, 250_000},
		{&typev3.FractionalPercent{Numerator: 25, Denominator: typev3.FractionalPercent_TEN_THOUSAND}, 2_500},
		{&typev3.FractionalPercent{Numerator: 7, Denominator: typev3.FractionalPercent_MILLION}, 7},
		{&typev3.FractionalPercent{Numerator: 250}, Always},
	} {
		if got := FractionOf(tc.p); got != tc.want {
			t.Errorf("%v: got %d want %d", tc.p, got, tc.want)
		}
	}
	if Fraction(0).Sample() || !Always.Sample() {
		t.Fatal("0% sampled or 100% not sampled")
	}
}
