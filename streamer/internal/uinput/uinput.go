// Package uinput creates virtual gamepads through Linux's uinput (cgo):
// an Xbox 360-like device per player pad, which SDL, Steam and evdev games
// see as a joystick. It needs write access to /dev/uinput (a kernel with
// CONFIG_INPUT_UINPUT, and the device given to the job).
package uinput

/*
#include <errno.h>
#include <stdlib.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/time.h>
#include <linux/input.h>
#include <linux/uinput.h>

// What xpad, the kernel's Xbox 360 driver, reports, so SDL's mapping for
// the device fits: the buttons in the W3C standard order (A B X Y, LB RB,
// -, -, back start, LS RS, -, -, -, -, home; 0 where the W3C button is an
// axis here: the triggers are ABS_Z and ABS_RZ, the D-pad the hat).
static const int metal_buttons[] = {
	BTN_A, BTN_B, BTN_X, BTN_Y, BTN_TL, BTN_TR, 0, 0,
	BTN_SELECT, BTN_START, BTN_THUMBL, BTN_THUMBR, 0, 0, 0, 0, BTN_MODE,
};

static int metal_abs(int fd, int code, int min, int max) {
	struct uinput_abs_setup a;
	memset(&a, 0, sizeof a);
	a.code = code;
	a.absinfo.minimum = min;
	a.absinfo.maximum = max;
	if (max > 255) { a.absinfo.fuzz = 16; a.absinfo.flat = 128; }
	return ioctl(fd, UI_ABS_SETUP, &a);
}

// metal_uinput_create returns the device's fd, or -errno.
static int metal_uinput_create(const char *path, const char *name) {
	int fd = open(path, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0) return -errno;
	int err = 0;
	if (ioctl(fd, UI_SET_EVBIT, EV_KEY) < 0 || ioctl(fd, UI_SET_EVBIT, EV_ABS) < 0) err = errno;
	for (unsigned i = 0; !err && i < sizeof metal_buttons / sizeof metal_buttons[0]; i++)
		if (metal_buttons[i] && ioctl(fd, UI_SET_KEYBIT, metal_buttons[i]) < 0) err = errno;
	int sticks[] = { ABS_X, ABS_Y, ABS_RX, ABS_RY };
	for (int i = 0; !err && i < 4; i++)
		if (ioctl(fd, UI_SET_ABSBIT, sticks[i]) < 0 || metal_abs(fd, sticks[i], -32768, 32767) < 0) err = errno;
	int triggers[] = { ABS_Z, ABS_RZ };
	for (int i = 0; !err && i < 2; i++)
		if (ioctl(fd, UI_SET_ABSBIT, triggers[i]) < 0 || metal_abs(fd, triggers[i], 0, 255) < 0) err = errno;
	int hat[] = { ABS_HAT0X, ABS_HAT0Y };
	for (int i = 0; !err && i < 2; i++)
		if (ioctl(fd, UI_SET_ABSBIT, hat[i]) < 0 || metal_abs(fd, hat[i], -1, 1) < 0) err = errno;
	if (!err) {
		struct uinput_setup s;
		memset(&s, 0, sizeof s);
		s.id.bustype = BUS_USB;
		s.id.vendor = 0x045e;  // Microsoft
		s.id.product = 0x028e; // Xbox 360 controller: what SDL's mappings know
		s.id.version = 0x0110;
		strncpy(s.name, name, UINPUT_MAX_NAME_SIZE - 1);
		if (ioctl(fd, UI_DEV_SETUP, &s) < 0 || ioctl(fd, UI_DEV_CREATE) < 0) err = errno;
	}
	if (err) { close(fd); return -err; }
	return fd;
}

static int metal_uinput_emit(int fd, int type, int code, int value) {
	struct input_event ev;
	memset(&ev, 0, sizeof ev);
	ev.type = type; ev.code = code; ev.value = value;
	return write(fd, &ev, sizeof ev) == sizeof ev ? 0 : -errno;
}

static void metal_uinput_destroy(int fd) {
	ioctl(fd, UI_DEV_DESTROY);
	close(fd);
}

static int metal_button_code(int i) { return metal_buttons[i]; }
*/
import "C"

import (
	"fmt"
	"math"
	"sync"
	"syscall"
	"unsafe"
)

// Path is the uinput device.
const Path = "/dev/uinput"

// Buttons and Axes are how many of the browser's standard gamepad layout a
// Pad takes (W3C Gamepad "standard" mapping).
const (
	Buttons = 17
	Axes    = 4
)

// Pad is one virtual gamepad.
type Pad struct {
	mu      sync.Mutex
	fd      C.int
	buttons [Buttons]bool
	axes    [Axes + 4]int32 // sticks, the two analog triggers, the hat
}

// Create makes a virtual gamepad named name.
func Create(name string) (*Pad, error) {
	cpath, cname := C.CString(Path), C.CString(name)
	defer C.free(unsafe.Pointer(cpath))
	defer C.free(unsafe.Pointer(cname))
	fd := C.metal_uinput_create(cpath, cname)
	if fd < 0 {
		return nil, fmt.Errorf("uinput %s: %w", Path, syscall.Errno(-fd))
	}
	return &Pad{fd: fd}, nil
}

// Set applies the pad's state (buttons 0..1, axes -1..1, in the standard
// layout), sending only what changed.
func (p *Pad) Set(buttons, axes []float64) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fd < 0 {
		return syscall.EBADF
	}
	changed := false
	emit := func(typ, code, value C.int) error {
		changed = true
		if rc := C.metal_uinput_emit(p.fd, typ, code, value); rc < 0 {
			return fmt.Errorf("uinput write: %w", syscall.Errno(-rc))
		}
		return nil
	}
	pressed := func(i int) bool { return i < len(buttons) && buttons[i] > 0.5 }
	for i := range Buttons {
		code := C.metal_button_code(C.int(i))
		if code == 0 {
			continue // an axis on this device
		}
		if down := pressed(i); down != p.buttons[i] {
			p.buttons[i] = down
			if err := emit(C.EV_KEY, code, boolInt(down)); err != nil {
				return err
			}
		}
	}
	stick := func(v float64) int32 { return int32(math.Round(max(-1, min(1, v)) * 32767)) }
	trigger := func(i int) int32 {
		if i >= len(buttons) {
			return 0
		}
		return int32(math.Round(max(0, min(1, buttons[i])) * 255))
	}
	hat := func(neg, pos int) int32 {
		switch {
		case pressed(neg) && !pressed(pos):
			return -1
		case pressed(pos) && !pressed(neg):
			return 1
		}
		return 0
	}
	var want [Axes + 4]int32
	for i := range Axes {
		if i < len(axes) {
			want[i] = stick(axes[i])
		}
	}
	want[4], want[5] = trigger(6), trigger(7)
	want[6], want[7] = hat(14, 15), hat(12, 13)
	codes := [Axes + 4]C.int{C.ABS_X, C.ABS_Y, C.ABS_RX, C.ABS_RY, C.ABS_Z, C.ABS_RZ, C.ABS_HAT0X, C.ABS_HAT0Y}
	for i, v := range want {
		if v != p.axes[i] {
			p.axes[i] = v
			if err := emit(C.EV_ABS, codes[i], C.int(v)); err != nil {
				return err
			}
		}
	}
	if changed {
		return emit(C.EV_SYN, C.SYN_REPORT, 0)
	}
	return nil
}

// Close removes the device.
func (p *Pad) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fd >= 0 {
		C.metal_uinput_destroy(p.fd)
		p.fd = -1
	}
}

func boolInt(b bool) C.int {
	if b {
		return 1
	}
	return 0
}
