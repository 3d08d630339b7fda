package accesslog

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/trellis-mesh/trellis/internal/proxy/streaminfo"
)

// appendValue appends the raw value of s for info to dst. present is false when Envoy has no value
// (it prints "-" there, or nothing with omit_empty_values, or null in typed JSON), in which case dst
// comes back unchanged.
func (s *segment) appendValue(dst []byte, info *streaminfo.Info) (out []byte, present bool) {
	start := len(dst)
	switch s.op {
	case opLiteral:
		return append(dst, s.literal...), true
	case opStartTime:
		if info.Start.IsZero() {
			return dst, false
		}
		dst = s.time.append(dst, info.Start)
	case opReqHeader:
		v, ok := requestHeader(info, s.main)
		if !ok && s.hasAlt {
			v, ok = requestHeader(info, s.alt)
		}
		if !ok {
			return dst, false
		}
		dst = append(dst, v...)
	case opRespHeader:
		v, ok := headerValue(info.ResponseHeaders, s.main.key)
		if !ok && s.hasAlt {
			v, ok = headerValue(info.ResponseHeaders, s.alt.key)
		}
		if !ok {
			return dst, false
		}
		dst = append(dst, v...)
	case opTrailer:
		// streaminfo.Info does not carry response trailers yet: Envoy prints "-" for a missing one.
		return dst, false
	case opProtocol:
		if info.Protocol == "" {
			return dst, false
		}
		dst = append(dst, info.Protocol...)
	case opResponseCode:
		dst = strconv.AppendInt(dst, int64(info.ResponseCode), 10)
	case opResponseFlags:
		dst = appendFlags(dst, info.Flags)
	case opResponseCodeDetails:
		return appendString(dst, info.ResponseCodeDetails)
	case opBytesReceived:
		dst = strconv.AppendInt(dst, info.BytesReceived, 10)
	case opBytesSent:
		dst = strconv.AppendInt(dst, info.BytesSent, 10)
	case opDuration:
		dst = strconv.AppendInt(dst, info.Duration.Milliseconds(), 10)
	case opUpstreamHost:
		return appendString(dst, info.UpstreamHost)
	case opUpstreamCluster:
		return appendString(dst, info.UpstreamCluster)
	case opUpstreamRequestAttemptCount:
		dst = strconv.AppendInt(dst, int64(info.Attempts), 10)
	case opDownstreamRemoteAddress:
		return appendString(dst, info.DownstreamRemoteAddr)
	case opDownstreamRemoteAddressWithoutPort:
		return appendString(dst, withoutPort(info.DownstreamRemoteAddr))
	case opDownstreamLocalAddress:
		return appendString(dst, info.DownstreamLocalAddr)
	case opDownstreamLocalAddressWithoutPort:
		return appendString(dst, withoutPort(info.DownstreamLocalAddr))
	case opRequestedServerName:
		return appendString(dst, info.ServerName)
	case opRouteName:
		return appendString(dst, info.RouteName)
	case opConnectionTerminationDetails, opUpstreamLocalAddress, opUpstreamTransportFailureReason:
		// Not recorded by streaminfo.Info yet; Envoy prints "-" when it has none.
		return dst, false
	default:
		return dst, false
	}
	if s.maxLen > 0 && len(dst)-start > s.maxLen {
		dst = dst[:start+s.maxLen]
	}
	return dst, true
}

func appendString(dst []byte, v string) ([]byte, bool) {
	if v == "" {
		return dst, false
	}
	return append(dst, v...), true
}

func appendFlags(dst []byte, f streaminfo.Flags) []byte {
	if f == 0 {
		return append(dst, '-')
	}
	first := true
	for i, name := range flagNames {
		if f&(1<<i) == 0 || name == "" {
			continue
		}
		if !first {
			dst = append(dst, ',')
		}
		dst = append(dst, name...)
		first = false
	}
	return dst
}

func requestHeader(info *streaminfo.Info, h headerRef) (string, bool) {
	switch h.pseudo {
	case pseudoMethod:
		return info.Method, info.Method != ""
	case pseudoPath:
		return info.Path, info.Path != ""
	case pseudoAuthority:
		return info.Authority, info.Authority != ""
	case pseudoScheme:
		// streaminfo.Info has no scheme: trellis-proxy's listeners are plaintext, and an SNI means
		// the connection was TLS.
		switch {
		case info.Protocol == "":
			return "", false
		case info.ServerName != "":
			return "https", true
		}
		return "http", true
	}
	return headerValue(info.RequestHeaders, h.key)
}

// headerValue is the first value of a header, as Envoy's REQ/RESP read it; key is canonical, so the
// map is indexed directly (http.Header.Get would canonicalize again).
func headerValue(h http.Header, key string) (string, bool) {
	v := h[key]
	if len(v) == 0 {
		return "", false
	}
	return v[0], true
}

// withoutPort strips the port from host:port or [v6]:port, leaving the v6 address bare as Envoy
// does.
func withoutPort(addr string) string {
	i := strings.LastIndexByte(addr, ':')
	if i < 0 || strings.IndexByte(addr, ']') > i {
		return addr
	}
	host := addr[:i]
	if len(host) >= 2 && host[0] == '[' && host[len(host)-1] == ']' {
		host = host[1 : len(host)-1]
	}
	return host
}

// appendText renders segments as a text line: missing values print "-", or nothing with
// omitEmpty.
func appendText(dst []byte, segs []segment, info *streaminfo.Info, omitEmpty bool) []byte {
	for i := range segs {
		var ok bool
		dst, ok = segs[i].appendValue(dst, info)
		if !ok && !omitEmpty {
			dst = append(dst, '-')
		}
	}
	return dst
}
