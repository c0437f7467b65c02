package streamer

import "sync"

// held tracks the keys and buttons one peer holds down, so that they are
// released when the peer goes away: a player whose connection drops with a
// key held must not leave the desktop typing it forever.
type held struct {
	mu      sync.Mutex
	keys    map[uint32]bool
	buttons map[int]bool
}

// note records a message that was injected.
func (h *held) note(m InputMessage) {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch m.Type {
	case "key":
		if h.keys == nil {
			h.keys = map[uint32]bool{}
		}
		if *m.Down {
			h.keys[*m.Keysym] = true
		} else {
			delete(h.keys, *m.Keysym)
		}
	case "button":
		if h.buttons == nil {
			h.buttons = map[int]bool{}
		}
		if *m.Down {
			h.buttons[*m.Button] = true
		} else {
			delete(h.buttons, *m.Button)
		}
	}
}

// release lets go of everything still held, once.
func (h *held) release(inj Injector) {
	h.mu.Lock()
	keys, buttons := h.keys, h.buttons
	h.keys, h.buttons = nil, nil
	h.mu.Unlock()
	if inj == nil {
		return
	}
	for k := range keys {
		_ = inj.Key(k, false)
	}
	for b := range buttons {
		inj.Button(b, false)
	}
}
