package kafka

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
)

// TestClientLogReachesTheRuntimeLoggerOneLevelLower: franz-go's warnings
// show at info, its request narration only at debug, nothing when the
// runtime's logger discards.
func TestClientLogReachesTheRuntimeLoggerOneLevelLower(t *testing.T) {
	for _, tc := range []struct {
		level     slog.Level
		wantLevel kgo.LogLevel
	}{
		{slog.LevelDebug, kgo.LogLevelInfo},
		{slog.LevelInfo, kgo.LogLevelWarn},
		{slog.LevelWarn, kgo.LogLevelError},
		{slog.LevelError + 1, kgo.LogLevelNone},
	} {
		var buf bytes.Buffer
		l := clientLogger{slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: tc.level}))}
		if got := l.Level(); got != tc.wantLevel {
			t.Errorf("logger at %v: franz-go level %v, want %v", tc.level, got, tc.wantLevel)
		}
		l.Log(kgo.LogLevelWarn, "unable to open connection to broker", "addr", "127.0.0.1:1")
		shown := strings.Contains(buf.String(), "client=franz-go")
		if want := tc.level <= slog.LevelInfo; shown != want {
			t.Errorf("logger at %v: a franz-go warning shown %v, want %v (%q)", tc.level, shown, want, buf.String())
		}
	}
	if (clientLogger{slog.New(slog.DiscardHandler)}).Level() != kgo.LogLevelNone {
		t.Error("a discarding logger asks franz-go to log")
	}
}
