package proxy

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
)

// LogComponents are the loggers trellis-proxy has, named as Envoy's where they map (Envoy's
// --component-log-level and /logging use these names): admin (admin API), config (xDS client and
// config updates), conn_handler (listeners and connections), dns (DNS proxy), healthcheck (the
// application health check, Istio agent's scope of that name), http (connection manager), main
// (startup and shutdown), router (routing), secret (the identity agent and SDS) and upstream
// (clusters and hosts).
var LogComponents = []string{"admin", "config", "conn_handler", "dns", "healthcheck", "http", "main", "router", "secret", "upstream"}

// Envoy's level names, lowest first, with the slog levels they map to.
var envoyLevels = []struct {
	name  string
	level slog.Level
}{
	{"trace", slog.LevelDebug - 4},
	{"debug", slog.LevelDebug},
	{"info", slog.LevelInfo},
	{"warning", slog.LevelWarn},
	{"error", slog.LevelError},
	{"critical", slog.LevelError + 4},
	{"off", slog.LevelError + 8},
}

// ParseLevel reads an Envoy log level name (trace, debug, info, warning or warn, error, critical,
// off).
func ParseLevel(s string) (slog.Level, error) {
	name := strings.ToLower(s)
	if name == "warn" {
		name = "warning"
	}
	for _, l := range envoyLevels {
		if l.name == name {
			return l.level, nil
		}
	}
	names := make([]string, len(envoyLevels))
	for i, l := range envoyLevels {
		names[i] = l.name
	}
	return 0, fmt.Errorf("unknown log level %q: want one of %s", s, strings.Join(names, ", "))
}

func levelName(l slog.Level) string {
	name := envoyLevels[0].name
	for _, e := range envoyLevels {
		if l >= e.level {
			name = e.name
		}
	}
	return name
}

// LogLevels holds one level per component over one output handler, changeable while running
// (/logging). Its methods are safe for concurrent use.
type LogLevels struct {
	base slog.Handler
	vars map[string]*slog.LevelVar
}

// NewLogLevels returns every component at level, writing through base; base itself should accept
// every level, so the components' levels decide.
func NewLogLevels(base slog.Handler, level slog.Level) *LogLevels {
	l := &LogLevels{base: base, vars: make(map[string]*slog.LevelVar, len(LogComponents))}
	for _, c := range LogComponents {
		v := new(slog.LevelVar)
		v.Set(level)
		l.vars[c] = v
	}
	return l
}

// Logger returns component's logger: records carry component=<name> and are kept when at or above
// the component's current level. It panics on an unknown component, a programming error.
func (l *LogLevels) Logger(component string) *slog.Logger {
	v := l.vars[component]
	if v == nil {
		panic("proxy: unknown log component " + component)
	}
	return slog.New(&levelHandler{level: v, next: l.base}).With("component", component)
}

// Set sets one component's level from Envoy's names.
func (l *LogLevels) Set(component, level string) error {
	v := l.vars[component]
	if v == nil {
		return fmt.Errorf("unknown logger %q: want one of %s", component, strings.Join(LogComponents, ", "))
	}
	lv, err := ParseLevel(level)
	if err != nil {
		return err
	}
	v.Set(lv)
	return nil
}

// SetAll sets every component's level.
func (l *LogLevels) SetAll(level string) error {
	lv, err := ParseLevel(level)
	if err != nil {
		return err
	}
	for _, v := range l.vars {
		v.Set(lv)
	}
	return nil
}

// SetComponents applies Envoy's --component-log-level syntax, "upstream:debug,http:info". Nothing
// changes when any entry is invalid.
func (l *LogLevels) SetComponents(spec string) error {
	type set struct{ c, lv string }
	var sets []set
	for entry := range strings.SplitSeq(spec, ",") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		c, lv, ok := strings.Cut(entry, ":")
		if !ok {
			return fmt.Errorf("%q: want component:level", entry)
		}
		if l.vars[c] == nil {
			return fmt.Errorf("unknown logger %q: want one of %s", c, strings.Join(LogComponents, ", "))
		}
		if _, err := ParseLevel(lv); err != nil {
			return err
		}
		sets = append(sets, set{c, lv})
	}
	for _, s := range sets {
		_ = l.Set(s.c, s.lv)
	}
	return nil
}

// Levels returns each component's current level name, sorted by component.
func (l *LogLevels) Levels() [][2]string {
	out := make([][2]string, 0, len(l.vars))
	for c, v := range l.vars {
		out = append(out, [2]string{c, levelName(v.Level())})
	}
	slices.SortFunc(out, func(a, b [2]string) int { return strings.Compare(a[0], b[0]) })
	return out
}

// levelHandler filters records by a component's level before the shared handler sees them.
type levelHandler struct {
	level *slog.LevelVar
	next  slog.Handler
}

func (h *levelHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.level.Level() && h.next.Enabled(ctx, l)
}

func (h *levelHandler) Handle(ctx context.Context, r slog.Record) error { return h.next.Handle(ctx, r) }

func (h *levelHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &levelHandler{level: h.level, next: h.next.WithAttrs(attrs)}
}

func (h *levelHandler) WithGroup(name string) slog.Handler {
	return &levelHandler{level: h.level, next: h.next.WithGroup(name)}
}
