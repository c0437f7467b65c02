// Package player embeds the browser player page: WHEP playback, connection
// progress, a stats overlay, fullscreen, pointer lock, input over a data
// channel and reconnect after ICE failure. The streamer serves it standalone
// and the gateway serves the same files.
//
// The page reads its settings from the URL fragment (never sent to a
// server): #whep=<url>&token=<session token>&ice=<JSON RTCIceServer list>,
// or from window.METAL_CONFIG set by a page that embeds player.js.
package player

import (
	"embed"
	"io/fs"
	"net/http"
)

//go:embed web
var files embed.FS

// FS is the page's files: index.html, player.css and player.js.
func FS() fs.FS {
	sub, _ := fs.Sub(files, "web")
	return sub
}

// Handler serves the player files.
func Handler() http.Handler { return http.FileServerFS(FS()) }
