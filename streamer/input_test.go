package streamer

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

type recorder struct{ calls []string }

func (r *recorder) MoveTo(x, y int)   { r.calls = append(r.calls, fmt.Sprintf("move %d %d", x, y)) }
func (r *recorder) MoveBy(dx, dy int) { r.calls = append(r.calls, fmt.Sprintf("rel %d %d", dx, dy)) }
func (r *recorder) Button(b int, down bool) {
	r.calls = append(r.calls, fmt.Sprintf("button %d %v", b, down))
}
func (r *recorder) Key(k uint32, down bool) error {
	r.calls = append(r.calls, fmt.Sprintf("key %#x %v", k, down))
	return nil
}

func TestParseInputValid(t *testing.T) {
	tests := []struct {
		msg  string
		want string
	}{
		{`{"type":"key","keysym":97,"down":true}`, "key 0x61 true"},
		{`{"type":"button","button":3,"down":false}`, "button 3 false"},
		{`{"type":"move","x":0.5,"y":1}`, "move 640 719"},
		{`{"type":"move","x":0,"y":0}`, "move 0 0"},
		{`{"type":"rel","dx":-3,"dy":7}`, "rel -3 7"},
		{`{"type":"wheel","dx":0,"dy":-2}`, "button 4 true,button 4 false,button 4 true,button 4 false"},
		{`{"type":"resize","width":1366,"height":768}`, ""}, // the streamer's, not the display's
	}
	for _, tt := range tests {
		t.Run(tt.msg, func(t *testing.T) {
			m, err := ParseInput([]byte(tt.msg))
			if err != nil {
				t.Fatal(err)
			}
			r := &recorder{}
			if err := m.Apply(r, 1280, 720); err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(r.calls, ","); got != tt.want {
				t.Fatalf("got %q want %q", got, tt.want)
			}
		})
	}
}

func TestParseInputRejects(t *testing.T) {
	tests := []struct {
		msg, want string
	}{
		{``, "empty"},
		{`not json`, "invalid character"},
		{`{"type":"key","keysym":97,"down":true}{}`, "trailing"},
		{`{"type":"key","keysym":97}`, `missing "down"`},
		{`{"type":"key","keysym":0,"down":true}`, "out of range"},
		{`{"type":"resize","width":0,"height":768}`, "outside 1..16384"},
		{`{"type":"resize","width":1366,"height":16385}`, "outside 1..16384"},
		{`{"type":"resize","width":1366}`, `missing "height"`},
		{`{"type":"resize","width":1366,"height":768,"x":0.5}`, `unexpected "x"`},
		{`{"type":"key","keysym":4294967295,"down":true}`, "out of range"},
		{`{"type":"key","keysym":97,"down":true,"x":1}`, `unexpected "x"`},
		{`{"type":"button","button":9,"down":true}`, "not 1, 2 or 3"},
		{`{"type":"move","x":1.5,"y":0}`, "outside 0..1"},
		{`{"type":"move","x":-0.1,"y":0}`, "outside 0..1"},
		{`{"type":"rel","dx":99999,"dy":0}`, "beyond"},
		{`{"type":"wheel","dx":0,"dy":1000}`, "beyond"},
		{`{"type":"teleport"}`, "unknown type"},
		{`{"down":true}`, `missing "type"`},
		{`{"type":"key","keysym":97,"down":true,"evil":1}`, "unknown field"},
		{`{"type":"key","keysym":"a","down":true}`, "cannot unmarshal"},
		{`{"type":"move","x":` + strings.Repeat("1", 300) + `,"y":0}`, "limit"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			_, err := ParseInput([]byte(tt.msg))
			if !errors.Is(err, ErrBadInput) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("ParseInput(%q) = %v, want ErrBadInput mentioning %q", tt.msg, err, tt.want)
			}
		})
	}
}
