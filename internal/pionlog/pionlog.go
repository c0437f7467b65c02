// Package pionlog bridges pion's logging.LoggerFactory to log/slog, so that
// WebRTC, ICE and TURN logs land in the same structured stream as Metal's.
package pionlog

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/pion/logging"
)

// Factory makes pion leveled loggers that write to an slog.Logger. pion's
// trace and debug both map to slog's debug.
type Factory struct {
	Log *slog.Logger
}

// NewLogger returns a logger for one pion scope ("ice", "dtls", ...).
func (f Factory) NewLogger(scope string) logging.LeveledLogger {
	return &logger{l: f.Log.With("pion", scope)}
}

type logger struct{ l *slog.Logger }

func (l *logger) log(level slog.Level, msg string) {
	if l.l.Enabled(context.Background(), level) {
		l.l.Log(context.Background(), level, msg)
	}
}

func (l *logger) Trace(msg string)          { l.log(slog.LevelDebug-4, msg) }
func (l *logger) Tracef(f string, a ...any) { l.log(slog.LevelDebug-4, fmt.Sprintf(f, a...)) }
func (l *logger) Debug(msg string)          { l.log(slog.LevelDebug, msg) }
func (l *logger) Debugf(f string, a ...any) { l.log(slog.LevelDebug, fmt.Sprintf(f, a...)) }
func (l *logger) Info(msg string)           { l.log(slog.LevelInfo, msg) }
func (l *logger) Infof(f string, a ...any)  { l.log(slog.LevelInfo, fmt.Sprintf(f, a...)) }
func (l *logger) Warn(msg string)           { l.log(slog.LevelWarn, msg) }
func (l *logger) Warnf(f string, a ...any)  { l.log(slog.LevelWarn, fmt.Sprintf(f, a...)) }
func (l *logger) Error(msg string)          { l.log(slog.LevelError, msg) }
func (l *logger) Errorf(f string, a ...any) { l.log(slog.LevelError, fmt.Sprintf(f, a...)) }
