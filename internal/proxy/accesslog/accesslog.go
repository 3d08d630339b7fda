package accesslog

import (
	"fmt"
	"sync"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	filev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	streamv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/trellis-mesh/trellis/internal/proxy/streaminfo"
)

// Logger writes one access log entry for a finished request. Log must not keep info, and never
// blocks on I/O.
type Logger interface {
	Log(info *streaminfo.Info)
}

// The access logger extensions trellis-proxy implements.
const (
	FileType   = "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog"
	StdoutType = "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog"
	StderrType = "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StderrAccessLog"
)

// Parse converts an Envoy AccessLog into a Logger writing through Default. Errors name the field,
// relative to the AccessLog ("typed_config.log_format.text_format_source: ...").
func Parse(al *accesslogv3.AccessLog) (Logger, error) { return Default.Parse(al) }

// Parse converts an Envoy AccessLog into a Logger writing through f.
func (f *Files) Parse(al *accesslogv3.AccessLog) (Logger, error) {
	if err := al.Validate(); err != nil {
		return nil, err
	}
	l := &logger{name: al.GetName()}
	if al.GetFilter() != nil {
		flt, err := parseFilter(al.GetFilter(), "filter")
		if err != nil {
			return nil, err
		}
		l.filter = flt
	}
	tc := al.GetTypedConfig()
	if tc == nil {
		return nil, fmt.Errorf("typed_config: required (one of %s, %s, %s)", FileType, StdoutType, StderrType)
	}
	var (
		path string
		lf   *corev3.SubstitutionFormatString
	)
	switch tc.GetTypeUrl() {
	case FileType:
		var c filev3.FileAccessLog
		if err := unmarshal(tc, &c); err != nil {
			return nil, err
		}
		path = c.GetPath()
		switch fm := c.GetAccessLogFormat().(type) {
		case *filev3.FileAccessLog_Format:
			//lint:ignore SA1019 Envoy still accepts the deprecated formats, and so do we.
			if err := l.setText(fm.Format, false, "typed_config.format"); err != nil {
				return nil, err
			}
		case *filev3.FileAccessLog_JsonFormat:
			//lint:ignore SA1019 Envoy still accepts the deprecated formats, and so do we.
			j, err := compileJSON(fm.JsonFormat, false, false, "typed_config.json_format")
			if err != nil {
				return nil, err
			}
			l.json = j
		case *filev3.FileAccessLog_TypedJsonFormat:
			//lint:ignore SA1019 Envoy still accepts the deprecated formats, and so do we.
			j, err := compileJSON(fm.TypedJsonFormat, true, false, "typed_config.typed_json_format")
			if err != nil {
				return nil, err
			}
			l.json = j
		case *filev3.FileAccessLog_LogFormat:
			lf = fm.LogFormat
		}
	case StdoutType:
		var c streamv3.StdoutAccessLog
		if err := unmarshal(tc, &c); err != nil {
			return nil, err
		}
		path, lf = "/dev/stdout", c.GetLogFormat()
	case StderrType:
		var c streamv3.StderrAccessLog
		if err := unmarshal(tc, &c); err != nil {
			return nil, err
		}
		path, lf = "/dev/stderr", c.GetLogFormat()
	default:
		return nil, fmt.Errorf("typed_config: access logger %q: %w", tc.GetTypeUrl(), ErrUnsupported)
	}
	if lf != nil {
		if err := l.setLogFormat(lf, "typed_config.log_format"); err != nil {
			return nil, err
		}
	}
	if l.text == nil && l.json == nil {
		if err := l.setText(DefaultFormat, false, "typed_config"); err != nil {
			return nil, err
		}
	}
	l.sink = f.open(path)
	return l, nil
}

func unmarshal(a *anypb.Any, m proto.Message) error {
	if err := a.UnmarshalTo(m); err != nil {
		return fmt.Errorf("typed_config: %w", err)
	}
	if v, ok := m.(interface{ Validate() error }); ok {
		if err := v.Validate(); err != nil {
			return fmt.Errorf("typed_config: %w", err)
		}
	}
	return nil
}

// setLogFormat applies a SubstitutionFormatString (Envoy's log_format).
func (l *logger) setLogFormat(lf *corev3.SubstitutionFormatString, field string) error {
	if len(lf.GetFormatters()) > 0 {
		return fmt.Errorf("%s.formatters: formatter extensions are %w", field, ErrUnsupported)
	}
	// content_type only matters to loggers that send HTTP; json_format_options.sort_properties is
	// what trellis-proxy does anyway.
	omit := lf.GetOmitEmptyValues()
	switch fm := lf.GetFormat().(type) {
	case *corev3.SubstitutionFormatString_TextFormat:
		//lint:ignore SA1019 Envoy still accepts the deprecated formats, and so do we.
		return l.setText(fm.TextFormat, omit, field+".text_format")
	case *corev3.SubstitutionFormatString_TextFormatSource:
		src := fm.TextFormatSource
		switch s := src.GetSpecifier().(type) {
		case *corev3.DataSource_InlineString:
			return l.setText(s.InlineString, omit, field+".text_format_source.inline_string")
		case *corev3.DataSource_InlineBytes:
			return l.setText(string(s.InlineBytes), omit, field+".text_format_source.inline_bytes")
		default:
			return fmt.Errorf("%s.text_format_source: only inline_string and inline_bytes are %w", field, ErrUnsupported)
		}
	case *corev3.SubstitutionFormatString_JsonFormat:
		j, err := compileJSON(fm.JsonFormat, true, omit, field+".json_format")
		if err != nil {
			return err
		}
		l.json = j
		return nil
	}
	return fmt.Errorf("%s: a format is required", field)
}

func (l *logger) setText(format string, omitEmpty bool, field string) error {
	segs, err := parseFormat(format)
	if err != nil {
		return fmt.Errorf("%s: %w", field, err)
	}
	if segs == nil {
		segs = []segment{} // an empty format logs empty lines, as Envoy
	}
	l.text, l.omitEmpty = segs, omitEmpty
	return nil
}

// logger is a parsed access log: an optional filter, a compiled format, and the file it writes to.
type logger struct {
	name      string
	filter    filter
	text      []segment
	omitEmpty bool
	json      *jsonFormat
	sink      *sink
}

type lineBuf struct{ out, scratch []byte }

var lineBufs = sync.Pool{New: func() any {
	return &lineBuf{out: make([]byte, 0, 1024), scratch: make([]byte, 0, 256)}
}}

func (l *logger) Log(info *streaminfo.Info) {
	if l.filter != nil && !l.filter(info) {
		return
	}
	b := lineBufs.Get().(*lineBuf)
	b.out = l.appendLine(b.out[:0], b, info)
	l.sink.write(b.out)
	lineBufs.Put(b)
}

func (l *logger) appendLine(dst []byte, b *lineBuf, info *streaminfo.Info) []byte {
	if l.json != nil {
		dst, b.scratch = l.json.append(dst, b.scratch, info)
		return dst
	}
	return appendText(dst, l.text, info, l.omitEmpty)
}

// String names the logger and its file, for logs and config dumps.
func (l *logger) String() string { return fmt.Sprintf("access log %q to %s", l.name, l.sink.path) }
