// Package progress shows how far a long run has come: a bar on a terminal,
// a line every few seconds otherwise (a log file, a CI job).
package progress

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// Bar counts done units of work out of a total under a label ("committed").
type Bar struct {
	out   io.Writer
	label string
	total int64
	bar   *progressbar.ProgressBar
	last  time.Time
}

// New returns a bar writing to out; it draws a bar only when out is a
// terminal.
func New(out io.Writer, label string, total int64) *Bar {
	b := &Bar{out: out, label: label, total: total}
	if f, ok := out.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		b.bar = progressbar.NewOptions64(total,
			progressbar.OptionSetWriter(out), progressbar.OptionSetDescription(label),
			progressbar.OptionShowCount(), progressbar.OptionSetWidth(30),
			progressbar.OptionThrottle(100*time.Millisecond), progressbar.OptionClearOnFinish())
	}
	return b
}

// SetTotal changes the total, for work whose size grows while it is done.
func (b *Bar) SetTotal(total int64) {
	b.total = total
	if b.bar != nil {
		b.bar.ChangeMax64(total)
	}
}

// Set shows done units and a note on what happened so far ("3 kills").
func (b *Bar) Set(done int64, note string) {
	if b.bar != nil {
		b.bar.Describe(fmt.Sprintf("%s (%s)", b.label, note))
		b.bar.Set64(done)
		return
	}
	if time.Since(b.last) >= 2*time.Second {
		b.last = time.Now()
		fmt.Fprintf(b.out, "%s %d/%d records, %s\n", b.label, done, b.total, note)
	}
}

// Finish clears the bar.
func (b *Bar) Finish() {
	if b.bar != nil {
		b.bar.Finish()
	}
}
