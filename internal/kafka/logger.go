package kafka

import (
	"context"
	"log/slog"

	"github.com/twmb/franz-go/pkg/kgo"
)

// clientLogger hands franz-go's log to the runtime's logger, one level
// lower than franz-go gives it (its informational lines narrate every
// request and transaction step), tagged client=franz-go. With a logger at
// debug level an operator sees why a commit or a join waited.
type clientLogger struct{ log *slog.Logger }

func (l clientLogger) Level() kgo.LogLevel {
	ctx := context.Background()
	switch {
	case l.log.Enabled(ctx, slog.LevelDebug):
		return kgo.LogLevelInfo
	case l.log.Enabled(ctx, slog.LevelInfo):
		return kgo.LogLevelWarn
	case l.log.Enabled(ctx, slog.LevelWarn):
		return kgo.LogLevelError
	}
	return kgo.LogLevelNone
}

func (l clientLogger) Log(level kgo.LogLevel, msg string, keyvals ...any) {
	lvl := slog.LevelDebug
	switch level {
	case kgo.LogLevelError:
		lvl = slog.LevelWarn
	case kgo.LogLevelWarn:
		lvl = slog.LevelInfo
	}
	l.log.Log(context.Background(), lvl, msg, append(keyvals, "client", "franz-go")...)
}
