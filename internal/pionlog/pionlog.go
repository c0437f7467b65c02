// Package pionlog bridges pion's logging.LoggerFactory to log/slog, so that
// WebRTC, ICE and TURN logs land in the same structured stream as Metal's.
package pionlog

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"

	"github.com/pion/logging"
	"golang.org/x/time/rate"
)

// Factory makes pion leveled loggers that write to an slog.Logger. pion's
// trace and debug both map to slog's debug. With Limit set, lines beyond
// its rate are dropped and counted, and the next line that passes says how
// many were: a flood of bad packets cannot flood the log. A line below the
// logger's level is never formatted.
type Factory struct {
	Log   *slog.Logger
	Limit *rate.Limiter
	// suppressed is shared by the factory's loggers (a pointer: Factory is
	// passed by value).
	suppressed *atomic.Int64
}

// Limited returns a factory whose loggers together write at most perSecond
// lines a second (bursts of burst).
func Limited(log *slog.Logger, perSecond float64, burst int) Factory {
	return Factory{Log: log, Limit: rate.NewLimiter(rate.Limit(perSecond), burst), suppressed: &atomic.Int64{}}
}

// NewLogger returns a logger for one pion scope ("ice", "dtls", ...).
func (f Factory) NewLogger(scope string) logging.LeveledLogger {
	return &logger{l: f.Log.With("pion", scope), limit: f.Limit, suppressed: f.suppressed}
}

type logger struct {
	l          *slog.Logger
	limit      *rate.Limiter
	suppressed *atomic.Int64
}

func (l *logger) logf(level slog.Level, format string, a ...any) {
	ctx := context.Background()
	if !l.l.Enabled(ctx, level) {
		return
	}
	if l.limit != nil && !l.limit.Allow() {
		l.suppressed.Add(1)
		return
	}
	msg := fmt.Sprintf(format, a...)
	if l.suppressed != nil {
		if n := l.suppressed.Swap(0); n > 0 {
			l.l.Log(ctx, level, msg, "suppressed_before", n)
			return
		}
	}
	l.l.Log(ctx, level, msg)
}

func (l *logger) Trace(msg string)          { l.logf(slog.LevelDebug-4, "%s", msg) }
func (l *logger) Tracef(f string, a ...any) { l.logf(slog.LevelDebug-4, f, a...) }
func (l *logger) Debug(msg string)          { l.logf(slog.LevelDebug, "%s", msg) }
func (l *logger) Debugf(f string, a ...any) { l.logf(slog.LevelDebug, f, a...) }
func (l *logger) Info(msg string)           { l.logf(slog.LevelInfo, "%s", msg) }
func (l *logger) Infof(f string, a ...any)  { l.logf(slog.LevelInfo, f, a...) }
func (l *logger) Warn(msg string)           { l.logf(slog.LevelWarn, "%s", msg) }
func (l *logger) Warnf(f string, a ...any)  { l.logf(slog.LevelWarn, f, a...) }
func (l *logger) Error(msg string)          { l.logf(slog.LevelError, "%s", msg) }
func (l *logger) Errorf(f string, a ...any) { l.logf(slog.LevelError, f, a...) }
