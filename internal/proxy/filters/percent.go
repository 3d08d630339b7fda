package filters

import (
	"math/rand/v2"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
)

// Fraction is a share of requests, in millionths: Envoy's FractionalPercent, normalised.
type Fraction uint32

// Always is every request.
const Always Fraction = 1_000_000

// FractionOf converts a FractionalPercent; an unset one is 0, as in Envoy. Values above the
// denominator mean every request.
func FractionOf(p *typev3.FractionalPercent) Fraction {
	if p == nil {
		return 0
	}
	n := uint64(p.GetNumerator())
	switch p.GetDenominator() {
	case typev3.FractionalPercent_HUNDRED:
		n *= 10_000
	case typev3.FractionalPercent_TEN_THOUSAND:
		n *= 100
	}
	return Fraction(min(n, uint64(Always)))
}

// RuntimeFraction converts a RuntimeFractionalPercent: trellis-proxy has no runtime, so its
// default_value is the value; def applies when the field is unset.
func RuntimeFraction(p *corev3.RuntimeFractionalPercent, def Fraction) Fraction {
	if p == nil {
		return def
	}
	return FractionOf(p.GetDefaultValue())
}

// Sample reports whether this request falls in the fraction.
func (f Fraction) Sample() bool {
	switch f {
	case 0:
		return false
	case Always:
		return true
	}
	return rand.Uint32N(uint32(Always)) < uint32(f)
}
