package jwtauthn

import (
	"errors"
	"fmt"

	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"

	"github.com/trellis-mesh/trellis/internal/proxy/filters"
)

// requirement is a node of a JwtRequirement tree, evaluated as Envoy's verifiers are: each
// provider node extracts and checks its own tokens; requires_any succeeds on the first child that
// does, requires_all fails on the first child that fails.
type requirement interface {
	verify(r *run) Status
}

// builder turns JwtRequirements into requirement trees.
type builder struct {
	all    []*provider
	byName map[string]*provider
}

func (b *builder) build(req *jwtv3.JwtRequirement) (requirement, error) {
	switch t := req.GetRequiresType().(type) {
	case nil:
		return allowAll{}, nil
	case *jwtv3.JwtRequirement_ProviderName:
		p, ok := b.byName[t.ProviderName]
		if !ok {
			return nil, fmt.Errorf("provider_name: Required provider ['%s'] is not configured", t.ProviderName)
		}
		return &providerReq{p: p, ext: newExtractor(p)}, nil
	case *jwtv3.JwtRequirement_ProviderAndAudiences:
		pa := t.ProviderAndAudiences
		p, ok := b.byName[pa.GetProviderName()]
		if !ok {
			return nil, fmt.Errorf("provider_and_audiences.provider_name: Required provider ['%s'] is not configured", pa.GetProviderName())
		}
		aud := newAudiences(pa.GetAudiences())
		return &providerReq{p: p, ext: newExtractor(p), aud: &aud}, nil
	case *jwtv3.JwtRequirement_RequiresAny:
		a := &anyReq{}
		for i, c := range t.RequiresAny.GetRequirements() {
			switch c.GetRequiresType().(type) {
			case *jwtv3.JwtRequirement_AllowMissing:
				a.allowMissing = true
				continue
			case *jwtv3.JwtRequirement_AllowMissingOrFailed:
				a.allowMissingOrFailed = true
				continue
			}
			r, err := b.build(c)
			if err != nil {
				return nil, fmt.Errorf("requires_any.requirements[%d].%w", i, err)
			}
			a.children = append(a.children, r)
		}
		if len(a.children) == 0 {
			if !a.allowMissing && !a.allowMissingOrFailed {
				return nil, errors.New("requires_any.requirements: at least one is required")
			}
			// Only a bypass in the list: it checks the tokens of every provider.
			a.children = append(a.children, &allowReq{ext: newExtractor(b.all...), all: b.all, allowFailed: a.allowMissingOrFailed})
		}
		return a, nil
	case *jwtv3.JwtRequirement_RequiresAll:
		a := &allReq{}
		for i, c := range t.RequiresAll.GetRequirements() {
			r, err := b.build(c)
			if err != nil {
				return nil, fmt.Errorf("requires_all.requirements[%d].%w", i, err)
			}
			a.children = append(a.children, r)
		}
		return a, nil
	case *jwtv3.JwtRequirement_AllowMissing:
		return &allowReq{ext: newExtractor(b.all...), all: b.all}, nil
	case *jwtv3.JwtRequirement_AllowMissingOrFailed:
		return &allowReq{ext: newExtractor(b.all...), all: b.all, allowFailed: true}, nil
	default:
		return nil, fmt.Errorf("%T: %w", t, filters.ErrUnsupported)
	}
}

type allowAll struct{}

func (allowAll) verify(*run) Status { return OK }

// providerReq is provider_name or provider_and_audiences: the provider's tokens must be present
// and all valid.
type providerReq struct {
	p   *provider
	ext *extractor
	aud *audiences // provider_and_audiences' override of the provider's audiences
}

func (q *providerReq) verify(r *run) Status {
	q.ext.sanitize(r.x.Headers)
	toks := q.ext.extract(r)
	return r.authenticate(toks, q.p, q.aud, false, false)
}

// allowReq is allow_missing (allowFailed false) or allow_missing_or_failed: the tokens of every
// provider are checked against the provider their issuer names.
type allowReq struct {
	ext         *extractor
	all         []*provider
	allowFailed bool
}

func (q *allowReq) verify(r *run) Status {
	q.ext.sanitize(r.x.Headers)
	toks := q.ext.extract(r)
	return r.authenticate(toks, nil, nil, q.allowFailed, true)
}

type anyReq struct {
	children                           []requirement
	allowMissing, allowMissingOrFailed bool
}

// verify is Envoy's AnyVerifierImpl: OK on the first child that is OK; otherwise the most telling
// failure (anything but JwtMissed and JwtUnknownIssuer wins, then JwtUnknownIssuer over
// JwtMissed), which allow_missing forgives when it is JwtMissed and allow_missing_or_failed always.
func (q *anyReq) verify(r *run) Status {
	final := JwtMissed
	for _, c := range q.children {
		st := c.verify(r)
		if st == OK {
			return OK
		}
		if (st != JwtMissed && st != JwtUnknownIssuer) || final == JwtMissed {
			final = st
		}
	}
	if q.allowMissingOrFailed || (q.allowMissing && final == JwtMissed) {
		return OK
	}
	return final
}

type allReq struct{ children []requirement }

func (q *allReq) verify(r *run) Status {
	for _, c := range q.children {
		if st := c.verify(r); st != OK {
			return st
		}
	}
	return OK
}
