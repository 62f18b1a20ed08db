package raftgroup

import (
	"bytes"
	"context"
	"io"
	"log"
	"log/slog"
	"strings"

	"github.com/hashicorp/go-hclog"
)

// This file bridges the loggers of hashicorp/raft (hclog) and hashicorp/serf
// (the standard library's *log.Logger) into log/slog, so that a node writes
// one log format.

// HCLog returns an hclog.Logger that writes to l.
func HCLog(l *slog.Logger, name string) hclog.Logger {
	return &hcAdapter{l: l, name: name}
}

type hcAdapter struct {
	l       *slog.Logger
	name    string
	implied []interface{}
}

var _ hclog.Logger = (*hcAdapter)(nil)

func slogLevel(level hclog.Level) slog.Level {
	switch level {
	case hclog.Trace, hclog.Debug:
		return slog.LevelDebug
	case hclog.Warn:
		return slog.LevelWarn
	case hclog.Error:
		return slog.LevelError
	default:
		return slog.LevelInfo
	}
}

func (a *hcAdapter) Log(level hclog.Level, msg string, args ...interface{}) {
	lv := slogLevel(level)
	if !a.l.Enabled(context.Background(), lv) {
		return
	}
	if a.name != "" {
		msg = a.name + ": " + msg
	}
	all := append(append([]interface{}{}, a.implied...), args...)
	a.l.Log(context.Background(), lv, msg, all...)
}

func (a *hcAdapter) Trace(msg string, args ...interface{}) { a.Log(hclog.Trace, msg, args...) }
func (a *hcAdapter) Debug(msg string, args ...interface{}) { a.Log(hclog.Debug, msg, args...) }
func (a *hcAdapter) Info(msg string, args ...interface{})  { a.Log(hclog.Info, msg, args...) }
func (a *hcAdapter) Warn(msg string, args ...interface{})  { a.Log(hclog.Warn, msg, args...) }
func (a *hcAdapter) Error(msg string, args ...interface{}) { a.Log(hclog.Error, msg, args...) }

func (a *hcAdapter) enabled(lv slog.Level) bool { return a.l.Enabled(context.Background(), lv) }
func (a *hcAdapter) IsTrace() bool              { return a.enabled(slog.LevelDebug) }
func (a *hcAdapter) IsDebug() bool              { return a.enabled(slog.LevelDebug) }
func (a *hcAdapter) IsInfo() bool               { return a.enabled(slog.LevelInfo) }
func (a *hcAdapter) IsWarn() bool               { return a.enabled(slog.LevelWarn) }
func (a *hcAdapter) IsError() bool              { return a.enabled(slog.LevelError) }
func (a *hcAdapter) ImpliedArgs() []interface{} { return a.implied }
func (a *hcAdapter) Name() string               { return a.name }
func (a *hcAdapter) SetLevel(hclog.Level)       {}
func (a *hcAdapter) GetLevel() hclog.Level {
	if a.IsDebug() {
		return hclog.Debug
	}
	return hclog.Info
}

func (a *hcAdapter) With(args ...interface{}) hclog.Logger {
	return &hcAdapter{l: a.l, name: a.name, implied: append(append([]interface{}{}, a.implied...), args...)}
}

func (a *hcAdapter) Named(name string) hclog.Logger {
	n := name
	if a.name != "" {
		n = a.name + "." + name
	}
	return &hcAdapter{l: a.l, name: n, implied: a.implied}
}

func (a *hcAdapter) ResetNamed(name string) hclog.Logger {
	return &hcAdapter{l: a.l, name: name, implied: a.implied}
}

func (a *hcAdapter) StandardLogger(*hclog.StandardLoggerOptions) *log.Logger {
	return StdLog(a.l)
}

func (a *hcAdapter) StandardWriter(*hclog.StandardLoggerOptions) io.Writer {
	return &stdWriter{l: a.l}
}

// StdLog returns a standard library logger writing to l. Lines that start
// with a "[LEVEL]" tag, as serf and memberlist write them, are logged at that
// level.
func StdLog(l *slog.Logger) *log.Logger {
	return log.New(&stdWriter{l: l}, "", 0)
}

type stdWriter struct{ l *slog.Logger }

func (w *stdWriter) Write(p []byte) (int, error) {
	msg := string(bytes.TrimSpace(p))
	lv := slog.LevelInfo
	for tag, level := range map[string]slog.Level{
		"[DEBUG]": slog.LevelDebug, "[TRACE]": slog.LevelDebug, "[INFO]": slog.LevelInfo,
		"[WARN]": slog.LevelWarn, "[ERR]": slog.LevelError, "[ERROR]": slog.LevelError,
	} {
		if rest, ok := strings.CutPrefix(msg, tag); ok {
			msg, lv = strings.TrimSpace(rest), level
			break
		}
	}
	w.l.Log(context.Background(), lv, msg)
	return len(p), nil
}
