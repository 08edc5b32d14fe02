// Package web holds the BuddyTok browser client: plain HTML and ES
// modules, no build step. The edge serves Files.
package web

import "embed"

// Files are the page's static assets, served at the site root.
//
//go:embed index.html style.css app.js connection.js view.js render.js video.js names.js rooms.js
var Files embed.FS

// Index is the page, served at the site root and at every room's link.
var Index = func() []byte {
	b, err := Files.ReadFile("index.html")
	if err != nil {
		panic(err) // embedded above
	}
	return b
}()
