package accesslog

import (
	"errors"
	"fmt"
	"net/textproto"
	"strconv"
	"strings"

	"github.com/trellis-mesh/trellis/internal/proxy/streaminfo"
)

// ErrUnsupported marks config trellis-proxy does not implement (the same words as xdsconfig's).
var ErrUnsupported = errors.New("not supported by trellis-proxy")

// DefaultFormat is Envoy's default access log format, used when a logger names none.
const DefaultFormat = `[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" ` +
	`%RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% ` +
	`%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" ` +
	`"%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%"` + "\n"

// op is one command operator.
type op uint8

const (
	opLiteral op = iota
	opStartTime
	opReqHeader
	opRespHeader
	opTrailer
	opProtocol
	opResponseCode
	opResponseFlags
	opResponseCodeDetails
	opConnectionTerminationDetails
	opBytesReceived
	opBytesSent
	opDuration
	opUpstreamHost
	opUpstreamCluster
	opUpstreamLocalAddress
	opUpstreamTransportFailureReason
	opUpstreamRequestAttemptCount
	opDownstreamRemoteAddress
	opDownstreamRemoteAddressWithoutPort
	opDownstreamLocalAddress
	opDownstreamLocalAddressWithoutPort
	opRequestedServerName
	opRouteName
)

// operators are the command operators trellis-proxy renders, by Envoy's name. Those not here are a
// config error naming the operator, as in Envoy ("Not supported field in StreamInfo").
var operators = map[string]op{
	"START_TIME":                             opStartTime,
	"REQ":                                    opReqHeader,
	"REQUEST_HEADER":                         opReqHeader,
	"RESP":                                   opRespHeader,
	"RESPONSE_HEADER":                        opRespHeader,
	"TRAILER":                                opTrailer,
	"RESPONSE_TRAILER":                       opTrailer,
	"PROTOCOL":                               opProtocol,
	"RESPONSE_CODE":                          opResponseCode,
	"RESPONSE_FLAGS":                         opResponseFlags,
	"RESPONSE_CODE_DETAILS":                  opResponseCodeDetails,
	"CONNECTION_TERMINATION_DETAILS":         opConnectionTerminationDetails,
	"BYTES_RECEIVED":                         opBytesReceived,
	"BYTES_SENT":                             opBytesSent,
	"DURATION":                               opDuration,
	"UPSTREAM_HOST":                          opUpstreamHost,
	"UPSTREAM_CLUSTER":                       opUpstreamCluster,
	"UPSTREAM_CLUSTER_RAW":                   opUpstreamCluster,
	"UPSTREAM_LOCAL_ADDRESS":                 opUpstreamLocalAddress,
	"UPSTREAM_TRANSPORT_FAILURE_REASON":      opUpstreamTransportFailureReason,
	"UPSTREAM_REQUEST_ATTEMPT_COUNT":         opUpstreamRequestAttemptCount,
	"DOWNSTREAM_REMOTE_ADDRESS":              opDownstreamRemoteAddress,
	"DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT": opDownstreamRemoteAddressWithoutPort,
	"DOWNSTREAM_DIRECT_REMOTE_ADDRESS":       opDownstreamRemoteAddress,
	"DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT": opDownstreamRemoteAddressWithoutPort,
	"DOWNSTREAM_LOCAL_ADDRESS":                      opDownstreamLocalAddress,
	"DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT":         opDownstreamLocalAddressWithoutPort,
	"REQUESTED_SERVER_NAME":                         opRequestedServerName,
	"ROUTE_NAME":                                    opRouteName,
}

// numeric operators render as JSON numbers in typed JSON formats.
func (o op) numeric() bool {
	switch o {
	case opResponseCode, opBytesReceived, opBytesSent, opDuration, opUpstreamRequestAttemptCount:
		return true
	}
	return false
}

// pseudo is a request pseudo-header REQ() can name, read from streaminfo.Info's fields.
type pseudo uint8

const (
	notPseudo pseudo = iota
	pseudoMethod
	pseudoPath
	pseudoAuthority
	pseudoScheme
)

// headerRef is one header an operator reads: a canonical key, or a pseudo-header.
type headerRef struct {
	key    string
	pseudo pseudo
}

// segment is one piece of a compiled format: literal text or one operator.
type segment struct {
	op      op
	literal string
	// main and alt are REQ/RESP/TRAILER's X?Y; alt.key is "" and alt.pseudo notPseudo when absent.
	main, alt headerRef
	hasAlt    bool
	// maxLen truncates the value (":Z"); 0 means no limit.
	maxLen int
	time   *timeFormat
}

// parseFormat compiles an Envoy format string (Envoy's SubstitutionFormatParser): "%%" is a literal
// '%', and each command reads %COMMAND(ARG):LENGTH% with ARG and LENGTH optional.
func parseFormat(format string) ([]segment, error) {
	var segs []segment
	var lit strings.Builder
	flush := func() {
		if lit.Len() > 0 {
			segs = append(segs, segment{op: opLiteral, literal: lit.String()})
			lit.Reset()
		}
	}
	for pos := 0; pos < len(format); {
		c := format[pos]
		if c != '%' {
			lit.WriteByte(c)
			pos++
			continue
		}
		if pos+1 < len(format) && format[pos+1] == '%' {
			lit.WriteByte('%')
			pos += 2
			continue
		}
		name, arg, hasArg, maxLen, n, ok := scanCommand(format[pos:])
		if !ok {
			return nil, fmt.Errorf("format %q: no valid command operator at position %d", format, pos)
		}
		seg, err := compileOperator(name, arg, hasArg, maxLen)
		if err != nil {
			return nil, err
		}
		flush()
		segs = append(segs, seg)
		pos += n
	}
	flush()
	return segs, nil
}

// scanCommand matches Envoy's ^%([A-Z0-9_]+)(?:\((.*?)\))?(?::([0-9]+))?% at the start of s, and
// returns the number of bytes it spans.
func scanCommand(s string) (name, arg string, hasArg bool, maxLen, n int, ok bool) {
	i := 1
	for i < len(s) && (s[i] >= 'A' && s[i] <= 'Z' || s[i] >= '0' && s[i] <= '9' || s[i] == '_') {
		i++
	}
	if i == 1 {
		return "", "", false, 0, 0, false
	}
	name = s[1:i]
	// tail matches (?::([0-9]+))?% at j and returns the end.
	tail := func(j int) (int, int, bool) {
		ml := 0
		if j < len(s) && s[j] == ':' {
			k := j + 1
			for k < len(s) && s[k] >= '0' && s[k] <= '9' {
				k++
			}
			if k == j+1 {
				return 0, 0, false
			}
			v, err := strconv.Atoi(s[j+1 : k])
			if err != nil {
				return 0, 0, false
			}
			ml, j = v, k
		}
		if j < len(s) && s[j] == '%' {
			return ml, j + 1, true
		}
		return 0, 0, false
	}
	if i < len(s) && s[i] == '(' {
		// Lazy (.*?): the first ')' after which the rest of the command matches; '.' stops at '\n'.
		for j := i + 1; j < len(s) && s[j] != '\n'; j++ {
			if s[j] != ')' {
				continue
			}
			if ml, end, ok := tail(j + 1); ok {
				return name, s[i+1 : j], true, ml, end, true
			}
		}
	}
	if ml, end, ok := tail(i); ok {
		return name, "", false, ml, end, true
	}
	return "", "", false, 0, 0, false
}

func compileOperator(name, arg string, hasArg bool, maxLen int) (segment, error) {
	o, known := operators[name]
	if !known {
		return segment{}, fmt.Errorf("command operator %%%s%%: %w", name, ErrUnsupported)
	}
	seg := segment{op: o, maxLen: maxLen}
	switch o {
	case opReqHeader, opRespHeader, opTrailer:
		if !hasArg || arg == "" {
			return segment{}, fmt.Errorf("command operator %%%s%%: a header name is required, as %s(X?Y):Z", name, name)
		}
		main, alt, hasAlt := strings.Cut(arg, "?")
		if hasAlt && (main == "" || alt == "" || strings.Contains(alt, "?")) {
			return segment{}, fmt.Errorf("command operator %%%s(%s)%%: want one header or two as X?Y", name, arg)
		}
		var err error
		if seg.main, err = header(main, o == opReqHeader); err != nil {
			return segment{}, fmt.Errorf("command operator %%%s(%s)%%: %w", name, arg, err)
		}
		if hasAlt {
			seg.hasAlt = true
			if seg.alt, err = header(alt, o == opReqHeader); err != nil {
				return segment{}, fmt.Errorf("command operator %%%s(%s)%%: %w", name, arg, err)
			}
		}
	case opStartTime:
		if hasArg {
			seg.time = parseTimeFormat(arg)
		}
	default:
		if hasArg {
			return segment{}, fmt.Errorf("command operator %%%s%% takes no argument, got (%s)", name, arg)
		}
	}
	return seg, nil
}

func header(name string, request bool) (headerRef, error) {
	if strings.HasPrefix(name, ":") {
		if !request {
			return headerRef{}, fmt.Errorf("pseudo-header %s: only request pseudo-headers (:method, :path, :authority, :scheme) are %w", name, ErrUnsupported)
		}
		switch strings.ToLower(name) {
		case ":method":
			return headerRef{pseudo: pseudoMethod}, nil
		case ":path":
			return headerRef{pseudo: pseudoPath}, nil
		case ":authority":
			return headerRef{pseudo: pseudoAuthority}, nil
		case ":scheme":
			return headerRef{pseudo: pseudoScheme}, nil
		}
		return headerRef{}, fmt.Errorf("pseudo-header %s: %w", name, ErrUnsupported)
	}
	if strings.ContainsAny(name, " \t\r\n:") {
		return headerRef{}, fmt.Errorf("invalid header name %q", name)
	}
	// Go keeps the request's Host out of its headers: Envoy's HTTP/1 codec makes it :authority.
	if request && strings.EqualFold(name, "host") {
		return headerRef{pseudo: pseudoAuthority}, nil
	}
	return headerRef{key: textproto.CanonicalMIMEHeaderKey(name)}, nil
}

// flagNames holds the %RESPONSE_FLAGS% name of each flag bit, so rendering never builds strings.
var flagNames = func() [32]string {
	var n [32]string
	for i := range n {
		if s := streaminfo.Flags(1 << i).String(); s != "-" {
			n[i] = s
		}
	}
	return n
}()
