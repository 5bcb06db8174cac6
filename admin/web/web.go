// Package web holds the admin web page: static files embedded in the
// binary, served by package admin at /admin/.
package web

import (
	"embed"
	"io/fs"
)

//go:embed index.html
var files embed.FS

// FS is the page's files; its root holds index.html.
var FS fs.FS = files
