package jwtauthn

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"math"
	"strconv"
	"strings"

	"google.golang.org/protobuf/types/known/structpb"
)

// token is a parsed JWT, in the shape jwt_verify_lib's Jwt has. It is immutable once parsed: the
// verified-token cache shares it between requests.
type token struct {
	raw      string
	alg, kid string
	iss, sub string
	aud      []string
	// iat, nbf and exp are 0 when absent, as in Envoy.
	iat, nbf, exp uint64
	// payloadB64 is the payload segment as sent (forward_payload_header forwards it).
	payloadB64 string
	sig        []byte
	// header and payload as Structs (header_in_metadata, payload_in_metadata), and the payload as
	// a Value ready for the dynamic metadata.
	header, payload *structpb.Struct
	payloadValue    *structpb.Value
	headerValue     *structpb.Value
}

// implementedAlgs are the algorithms jwt_verify_lib parses. HS* parse but never verify here: no
// JWKS key of kty "oct" is used, so they fail with JwksKidAlgMismatch as with an asymmetric JWKS
// in Envoy.
func implementedAlg(alg string) bool {
	switch alg {
	case "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA",
		"HS256", "HS384", "HS512":
		return true
	}
	return false
}

// parseToken is jwt_verify_lib's Jwt::parseFromString: the first failing check gives the status.
// It decodes but does not verify; the signature, times and audiences are checked afterwards.
func parseToken(raw string) (*token, Status) {
	h, rest, ok1 := strings.Cut(raw, ".")
	p, s, ok2 := strings.Cut(rest, ".")
	// Exactly three non-empty sections: an unsigned "h.p." is malformed, as in Envoy.
	if !ok1 || !ok2 || h == "" || p == "" || s == "" || strings.IndexByte(s, '.') >= 0 {
		return nil, JwtBadFormat
	}
	t := &token{raw: raw, payloadB64: p}
	hj, err := decodeSegment(h)
	if err != nil {
		return nil, JwtHeaderParseErrorBadBase64
	}
	hm, ok := jsonObject(hj)
	if !ok {
		return nil, JwtHeaderParseErrorBadJSON
	}
	alg, ok := hm["alg"].(string)
	if !ok {
		return nil, JwtHeaderBadAlg
	}
	if !implementedAlg(alg) {
		return nil, JwtHeaderNotImplementedAlg
	}
	t.alg = alg
	if v, present := hm["kid"]; present {
		if t.kid, ok = v.(string); !ok {
			return nil, JwtHeaderBadKid
		}
	}
	pj, err := decodeSegment(p)
	if err != nil {
		return nil, JwtPayloadParseErrorBadBase64
	}
	pm, ok := jsonObject(pj)
	if !ok {
		return nil, JwtPayloadParseErrorBadJSON
	}
	if st := t.claims(pm); st != OK {
		return nil, st
	}
	if t.sig, err = decodeSegment(s); err != nil {
		return nil, JwtSignatureParseErrorBadBase64
	}
	// The JSON decoded into Go values converts to a Struct without error: only float64, string,
	// bool, nil, []any and map[string]any come out of encoding/json.
	if t.header, err = structpb.NewStruct(hm); err != nil {
		return nil, JwtHeaderParseErrorBadJSON
	}
	if t.payload, err = structpb.NewStruct(pm); err != nil {
		return nil, JwtPayloadParseErrorBadJSON
	}
	t.headerValue = structpb.NewStructValue(t.header)
	t.payloadValue = structpb.NewStructValue(t.payload)
	return t, OK
}

func (t *token) claims(pm map[string]any) Status {
	var ok bool
	if v, present := pm["iss"]; present {
		if t.iss, ok = v.(string); !ok {
			return JwtPayloadParseErrorIssNotString
		}
	}
	if v, present := pm["sub"]; present {
		if t.sub, ok = v.(string); !ok {
			return JwtPayloadParseErrorSubNotString
		}
	}
	for _, c := range [...]struct {
		name            string
		dst             *uint64
		notInt, inRange Status
	}{
		{"iat", &t.iat, JwtPayloadParseErrorIatNotInteger, JwtPayloadParseErrorIatOutOfRange},
		{"nbf", &t.nbf, JwtPayloadParseErrorNbfNotInteger, JwtPayloadParseErrorNbfOutOfRange},
		{"exp", &t.exp, JwtPayloadParseErrorExpNotInteger, JwtPayloadParseErrorExpOutOfRange},
	} {
		v, present := pm[c.name]
		if !present {
			continue
		}
		f, isNum := v.(float64)
		if !isNum {
			return c.notInt
		}
		// Envoy's StructUtils::GetUInt64: a number in [0, 2^64), truncated.
		if f < 0 || f >= math.MaxUint64 || math.IsNaN(f) {
			return c.inRange
		}
		*c.dst = uint64(f)
	}
	if v, present := pm["jti"]; present {
		if _, ok = v.(string); !ok {
			return JwtPayloadParseErrorJtiNotString
		}
	}
	if v, present := pm["aud"]; present {
		switch a := v.(type) {
		case string:
			t.aud = []string{a}
		case []any:
			t.aud = make([]string, 0, len(a))
			for _, e := range a {
				s, ok := e.(string)
				if !ok {
					return JwtPayloadParseErrorAudNotString
				}
				t.aud = append(t.aud, s)
			}
		default:
			return JwtPayloadParseErrorAudNotString
		}
	}
	return OK
}

// strictB64 refuses non-canonical encodings (non-zero trailing bits): the signature covers the
// segments as sent, and a second spelling of the same bytes is not what was signed.
var strictB64 = base64.RawURLEncoding.Strict()

var errNotBase64URL = errors.New("not base64url")

// decodeSegment decodes unpadded base64url (RFC 7515 §2). Unlike absl::WebSafeBase64Unescape it
// refuses padding, and any character outside the alphabet (Go's decoder would skip CR and LF): the
// signature covers the segments as sent, so only the one spelling of the bytes that can have been
// signed is accepted.
func decodeSegment(s string) ([]byte, error) {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == '.' || !isTokenChar(c) {
			return nil, errNotBase64URL
		}
	}
	return strictB64.DecodeString(s)
}

// jsonObject decodes a JSON object; anything else (an array, trailing data) is not one.
func jsonObject(b []byte) (map[string]any, bool) {
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil || m == nil {
		return nil, false
	}
	return m, true
}

// timeStatus is Jwt::verifyTimeConstraint: nbf and exp, each with the clock skew.
func (t *token) timeStatus(now, skew uint64) Status {
	if now+skew < t.nbf {
		return JwtNotYetValid
	}
	if t.exp != 0 && now > t.exp+skew {
		return JwtExpired
	}
	return OK
}

// claimString renders a claim for claim_to_headers as Envoy does: strings as they are, numbers as
// integers when they are whole and non-negative, booleans as true/false; other kinds ("" here) add
// no header. name may be nested with dots ("a.b").
func (t *token) claimString(name string) string {
	fields := t.payload.GetFields()
	for {
		head, rest, nested := strings.Cut(name, ".")
		v := fields[head]
		if v == nil {
			return ""
		}
		if nested {
			s := v.GetStructValue()
			if s == nil {
				return ""
			}
			fields, name = s.GetFields(), rest
			continue
		}
		switch k := v.GetKind().(type) {
		case *structpb.Value_StringValue:
			return k.StringValue
		case *structpb.Value_BoolValue:
			if k.BoolValue {
				return "true"
			}
			return "false"
		case *structpb.Value_NumberValue:
			return formatClaimNumber(k.NumberValue)
		}
		return ""
	}
}

func formatClaimNumber(f float64) string {
	if f >= 0 && f < math.MaxUint64 && f == math.Trunc(f) {
		return strconv.FormatUint(uint64(f), 10)
	}
	return strconv.FormatFloat(f, 'f', 6, 64) // std::to_string(double)
}
