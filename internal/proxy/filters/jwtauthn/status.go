package jwtauthn

// Status is the outcome of verifying a request's tokens, with jwt_verify_lib's names and
// messages: the message is the local reply's body and, with spaces as underscores, part of its
// response code details.
type Status uint8

// The statuses trellis-proxy reports. Their messages are Envoy's, word for word.
const (
	OK Status = iota
	JwtMissed
	JwtNotYetValid
	JwtExpired
	JwtBadFormat
	JwtHeaderParseErrorBadBase64
	JwtHeaderParseErrorBadJSON
	JwtHeaderBadAlg
	JwtHeaderNotImplementedAlg
	JwtHeaderBadKid
	JwtPayloadParseErrorBadBase64
	JwtEd25519SignatureWrongLength
	JwtPayloadParseErrorBadJSON
	JwtPayloadParseErrorIssNotString
	JwtPayloadParseErrorSubNotString
	JwtPayloadParseErrorIatNotInteger
	JwtPayloadParseErrorIatOutOfRange
	JwtPayloadParseErrorNbfNotInteger
	JwtPayloadParseErrorNbfOutOfRange
	JwtPayloadParseErrorExpNotInteger
	JwtPayloadParseErrorExpOutOfRange
	JwtPayloadParseErrorJtiNotString
	JwtPayloadParseErrorAudNotString
	JwtSignatureParseErrorBadBase64
	JwtUnknownIssuer
	JwtAudienceNotAllowed
	JwtVerificationFail
	JwksParseError
	JwksNoKeys
	JwksBadKeys
	JwksNoValidKeys
	JwksKidAlgMismatch
	JwksFetchFail
	numStatuses
)

var messages = [numStatuses]string{
	OK:                                "OK",
	JwtMissed:                         "Jwt is missing",
	JwtNotYetValid:                    "Jwt not yet valid",
	JwtExpired:                        "Jwt is expired",
	JwtBadFormat:                      "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections",
	JwtHeaderParseErrorBadBase64:      "Jwt header is an invalid Base64url encoded",
	JwtHeaderParseErrorBadJSON:        "Jwt header is an invalid JSON",
	JwtHeaderBadAlg:                   "Jwt header [alg] field is required and must be a string",
	JwtHeaderNotImplementedAlg:        "Jwt header [alg] is not supported",
	JwtHeaderBadKid:                   "Jwt header [kid] field is not a string",
	JwtPayloadParseErrorBadBase64:     "Jwt payload is an invalid Base64url encoded",
	JwtEd25519SignatureWrongLength:    "Jwt ED25519 signature is wrong length",
	JwtPayloadParseErrorBadJSON:       "Jwt payload is an invalid JSON",
	JwtPayloadParseErrorIssNotString:  "Jwt payload [iss] field is not a string",
	JwtPayloadParseErrorSubNotString:  "Jwt payload [sub] field is not a string",
	JwtPayloadParseErrorIatNotInteger: "Jwt payload [iat] field is not an integer",
	JwtPayloadParseErrorIatOutOfRange: "Jwt payload [iat] field is not a positive 64 bit integer",
	JwtPayloadParseErrorNbfNotInteger: "Jwt payload [nbf] field is not an integer",
	JwtPayloadParseErrorNbfOutOfRange: "Jwt payload [nbf] field is not a positive 64 bit integer",
	JwtPayloadParseErrorExpNotInteger: "Jwt payload [exp] field is not an integer",
	JwtPayloadParseErrorExpOutOfRange: "Jwt payload [exp] field is not a positive 64 bit integer",
	JwtPayloadParseErrorJtiNotString:  "Jwt payload [jti] field is not a string",
	JwtPayloadParseErrorAudNotString:  "Jwt payload [aud] field is not a string or string list",
	JwtSignatureParseErrorBadBase64:   "Jwt signature is an invalid Base64url encoded",
	JwtUnknownIssuer:                  "Jwt issuer is not configured",
	JwtAudienceNotAllowed:             "Audiences in Jwt are not allowed",
	JwtVerificationFail:               "Jwt verification fails",
	JwksParseError:                    "Jwks is an invalid JSON",
	JwksNoKeys:                        "Jwks does not have [keys] field",
	JwksBadKeys:                       "[keys] in Jwks is not an array",
	JwksNoValidKeys:                   "Jwks doesn't have any valid public key",
	JwksKidAlgMismatch:                "Jwks doesn't have key to match kid or alg from Jwt",
	JwksFetchFail:                     "Jwks remote fetch is failed",
}

// details are the local replies' response code details, built once:
// "jwt_authn_access_denied{<message with spaces as underscores>}".
var details = func() (d [numStatuses]string) {
	for i, m := range messages {
		b := []byte(m)
		for j, c := range b {
			if c == ' ' {
				b[j] = '_'
			}
		}
		d[i] = "jwt_authn_access_denied{" + string(b) + "}"
	}
	return d
}()

// String is Envoy's message for s.
func (s Status) String() string {
	if s < numStatuses {
		return messages[s]
	}
	return "unknown status"
}

// Details is Envoy's %RESPONSE_CODE_DETAILS% for a request denied with s.
func (s Status) Details() string {
	if s < numStatuses {
		return details[s]
	}
	return "jwt_authn_access_denied"
}
