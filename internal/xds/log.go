package xds

import (
	"context"
	"fmt"
	"log/slog"
)

// cacheLogger adapts slog to go-control-plane's 4-method logger.
//
// The library logs every watch it opens at Info and routine ADS ordering
// skips ("not responding to request") at Warn; both are normal protocol
// traffic, so they are demoted one level to keep Trellis's own warnings
// meaningful.
type cacheLogger struct{ l *slog.Logger }

func (c cacheLogger) logf(level slog.Level, format string, args []any) {
	if !c.l.Enabled(context.Background(), level) {
		return
	}
	c.l.Log(context.Background(), level, fmt.Sprintf(format, args...))
}

func (c cacheLogger) Debugf(format string, args ...any) { c.logf(slog.LevelDebug, format, args) }
func (c cacheLogger) Infof(format string, args ...any)  { c.logf(slog.LevelDebug, format, args) }
func (c cacheLogger) Warnf(format string, args ...any)  { c.logf(slog.LevelInfo, format, args) }
func (c cacheLogger) Errorf(format string, args ...any) { c.logf(slog.LevelError, format, args) }
