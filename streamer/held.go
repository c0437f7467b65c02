package streamer

import "sync"

// held tracks the keys and buttons one peer holds down, so that they are
// released when the peer goes away: a player whose connection drops with a
// key held must not leave the desktop typing it forever. Injection and
// release take the same lock, so no key goes down after the release.
type held struct {
	mu      sync.Mutex
	closed  bool
	keys    map[uint32]bool
	buttons map[int]bool
}

// inject applies a validated message for the peer, unless the peer is gone,
// and remembers what it holds down.
func (h *held) inject(m InputMessage, inj Injector, width, height int) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return errPeerGone
	}
	if err := m.Apply(inj, width, height); err != nil {
		return err
	}
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
	return nil
}

// release lets go of everything held; with closed, the peer is gone and
// injects nothing more.
func (h *held) release(inj Injector, closed bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = h.closed || closed
	keys, buttons := h.keys, h.buttons
	h.keys, h.buttons = nil, nil
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
