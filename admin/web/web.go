// Package web holds the admin web page: static files embedded in the binary
// (no CDN, no build step, works offline), served by the admin API package at
// /admin/. The page talks only to the admin API under /admin/api/v1/,
// relative to itself, with the bearer token the operator pasted.
package web

import (
	"embed"
	"io/fs"
)

//go:embed index.html app.js api.js format.js style.css favicon.svg
var files embed.FS

// FS is the page's files; its root holds index.html and what it loads.
var FS fs.FS = files
