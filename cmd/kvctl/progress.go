package main

import (
	"os"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// progress is a progress bar on stderr: of entries (Add) or of bytes
// (Write, for an io.TeeReader).
type progress interface {
	Write(p []byte) (int, error)
	Add(n int) error
	Finish() error
	Exit() error
}

// progress returns a bar drawn on stderr when stderr is a terminal, and one
// that draws nothing otherwise (pipes and logs get no control codes).
// total 0 means unknown: the bar then shows a count and a spinner.
func (c *cli) progress(total int64, what string, bytes bool) progress {
	if !c.io.errTTY {
		return silent{}
	}
	if total <= 0 {
		total = -1
	}
	opts := []progressbar.Option{
		progressbar.OptionSetWriter(c.io.err),
		progressbar.OptionSetDescription(what),
		progressbar.OptionThrottle(100 * time.Millisecond),
		progressbar.OptionShowCount(),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionFullWidth(),
		progressbar.OptionOnCompletion(func() { c.io.err.Write([]byte("\n")) }),
	}
	if bytes {
		opts = append(opts, progressbar.OptionShowBytes(true), progressbar.OptionUseIECUnits(true))
	} else {
		opts = append(opts, progressbar.OptionSetItsString("entries"), progressbar.OptionShowIts())
	}
	return progressbar.NewOptions64(total, opts...)
}

// stderrIsTerminal reports whether the process's stderr is a terminal.
func stderrIsTerminal() bool { return term.IsTerminal(int(os.Stderr.Fd())) }

type silent struct{}

func (silent) Write(p []byte) (int, error) { return len(p), nil }
func (silent) Add(int) error               { return nil }
func (silent) Finish() error               { return nil }
func (silent) Exit() error                 { return nil }
