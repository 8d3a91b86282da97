package membership

import (
	"context"
	"log"
	"log/slog"
	"strings"
)

// slogWriter routes memberlist's *log.Logger output into slog at debug level.
// memberlist's own level ("[DEBUG]", "[INFO]", "[WARN]", "[ERR]") is kept as
// the attribute memberlist_level: it reports every dropped probe of a
// partitioned peer as an error, which would flood warn/error logs; this
// package logs what matters (joins, leaves, deaths, rejoins, key changes)
// itself.
type slogWriter struct{ l *slog.Logger }

func newStdLogger(l *slog.Logger) *log.Logger {
	return log.New(slogWriter{l}, "", 0)
}

func (w slogWriter) Write(p []byte) (int, error) {
	if !w.l.Enabled(context.Background(), slog.LevelDebug) {
		return len(p), nil
	}
	level, msg := parseMemberlistLine(string(p))
	w.l.Debug(msg, "component", "memberlist", "memberlist_level", level)
	return len(p), nil
}

// parseMemberlistLine splits "[WARN] memberlist: text\n" into "warn" and
// "text".
func parseMemberlistLine(s string) (level, msg string) {
	s = strings.TrimSpace(s)
	level = "info"
	if strings.HasPrefix(s, "[") {
		if i := strings.IndexByte(s, ']'); i > 0 {
			level = strings.ToLower(s[1:i])
			if level == "err" {
				level = "error"
			}
			s = strings.TrimSpace(s[i+1:])
		}
	}
	s = strings.TrimPrefix(s, "memberlist: ")
	return level, s
}
