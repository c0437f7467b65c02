package streamer

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/metal-stream/metal/streamer/internal/x11"
)

// TestEncodeCursor: an image becomes a PNG data URL with its hotspot and
// number; a hidden cursor and one too large to read carry no image.
func TestEncodeCursor(t *testing.T) {
	for _, tt := range []struct {
		name      string
		c         x11.Cursor
		wantImage bool
	}{
		{"image", x11.Cursor{Width: 2, Height: 1, HotX: 1, RGBA: []byte{255, 0, 0, 255, 0, 0, 255, 128}}, true},
		{"hidden", x11.Cursor{Width: 1, Height: 1, RGBA: []byte{0, 0, 0, 0}, Hidden: true}, false},
		{"too large to read", x11.Cursor{Width: 512, Height: 512, HotX: 3}, false},
	} {
		b, err := encodeCursor(tt.c, 7)
		if err != nil {
			t.Fatal(err)
		}
		var m cursorMessage
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		if m.Type != "cursor" || m.Seq != 7 || m.HotX != tt.c.HotX || m.Hidden != tt.c.Hidden ||
			strings.HasPrefix(m.Image, "data:image/png;base64,") != tt.wantImage {
			t.Errorf("%s: %+v", tt.name, m)
		}
	}
}
