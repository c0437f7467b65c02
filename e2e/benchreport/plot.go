package main

import (
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"math"
	"os"
	"slices"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"

	"github.com/metal-stream/metal/internal/benchout"
)

var palette = []color.RGBA{
	{0x1f, 0x77, 0xb4, 255}, {0xff, 0x7f, 0x0e, 255}, {0x2c, 0xa0, 0x2c, 255}, {0xd6, 0x27, 0x28, 255},
	{0x94, 0x67, 0xbd, 255}, {0x8c, 0x56, 0x4b, 255}, {0xe3, 0x77, 0xc2, 255}, {0x7f, 0x7f, 0x7f, 255},
}

// plot draws each series as an empirical CDF.
func plot(path, title, unit string, series []benchout.Series) error {
	const w, h, left, right, top, bottom = 1000, 560, 70, 260, 40, 50
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	draw.Draw(img, img.Bounds(), image.White, image.Point{}, draw.Src)
	maxX := 1.0
	for _, s := range series {
		for _, v := range s.Values {
			maxX = math.Max(maxX, v)
		}
	}
	maxX = math.Ceil(maxX/20) * 20
	pw, ph := float64(w-left-right), float64(h-top-bottom)
	px := func(v float64) int { return left + int(v/maxX*pw) }
	py := func(p float64) int { return top + int((1-p)*ph) }
	grey := color.RGBA{0xcc, 0xcc, 0xcc, 255}
	black := color.RGBA{0, 0, 0, 255}
	for i := 0; i <= 10; i++ {
		x := float64(i) * maxX / 10
		line(img, px(x), top, px(x), h-bottom, grey)
		text(img, px(x)-10, h-bottom+16, fmt.Sprintf("%.0f", x), black)
	}
	for i := 0; i <= 4; i++ {
		p := float64(i) / 4
		line(img, left, py(p), w-right, py(p), grey)
		text(img, left-34, py(p)+4, fmt.Sprintf("%.2f", p), black)
	}
	line(img, left, h-bottom, w-right, h-bottom, black)
	line(img, left, top, left, h-bottom, black)
	text(img, left, 24, title, black)
	text(img, (w-right)/2, h-12, unit, black)
	for i, s := range series {
		c := palette[i%len(palette)]
		v := slices.Clone(s.Values)
		slices.Sort(v)
		prevX, prevY := px(0), py(0)
		for j, x := range v {
			cx, cy := px(x), py(float64(j+1)/float64(len(v)))
			line(img, prevX, prevY, cx, prevY, c)
			line(img, cx, prevY, cx, cy, c)
			prevX, prevY = cx, cy
		}
		ly := top + 10 + i*18
		line(img, w-right+15, ly-4, w-right+40, ly-4, c)
		line(img, w-right+15, ly-3, w-right+40, ly-3, c)
		text(img, w-right+46, ly, fmt.Sprintf("%s (n=%d)", s.Name, len(s.Values)), black)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return png.Encode(f, img)
}

func line(img *image.RGBA, x0, y0, x1, y1 int, c color.RGBA) {
	dx, dy := abs(x1-x0), -abs(y1-y0)
	sx, sy := sign(x1-x0), sign(y1-y0)
	err := dx + dy
	for {
		img.SetRGBA(x0, y0, c)
		if x0 == x1 && y0 == y1 {
			return
		}
		e2 := 2 * err
		if e2 >= dy {
			err += dy
			x0 += sx
		}
		if e2 <= dx {
			err += dx
			y0 += sy
		}
	}
}

func text(img *image.RGBA, x, y int, s string, c color.RGBA) {
	d := &font.Drawer{Dst: img, Src: image.NewUniform(c), Face: basicfont.Face7x13, Dot: fixed.P(x, y)}
	d.DrawString(s)
}

func abs(v int) int {
	if v < 0 {
		return -v
	}
	return v
}

func sign(v int) int {
	switch {
	case v > 0:
		return 1
	case v < 0:
		return -1
	}
	return 0
}

// bar is one bar of a ratio chart.
type bar struct {
	name  string
	value float64
}

// plotRatios draws ratios as horizontal bars with a line at 1.0 (parity).
func plotRatios(path, title string, bars []bar) error {
	const w, left, right, top, rowH = 1000, 380, 60, 40, 26
	h := top + rowH*len(bars) + 40
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	draw.Draw(img, img.Bounds(), image.White, image.Point{}, draw.Src)
	black, grey := color.RGBA{0, 0, 0, 255}, color.RGBA{0xcc, 0xcc, 0xcc, 255}
	maxV := 1.5
	for _, b := range bars {
		maxV = math.Max(maxV, b.value)
	}
	maxV = math.Ceil(maxV*2) / 2
	pw := float64(w - left - right)
	px := func(v float64) int { return left + int(v/maxV*pw) }
	text(img, 10, 24, title, black)
	for i := 0.0; i <= maxV+1e-9; i += 0.5 {
		line(img, px(i), top, px(i), h-40, grey)
		text(img, px(i)-10, h-24, fmt.Sprintf("%.1f", i), black)
	}
	for i, b := range bars {
		y := top + i*rowH
		text(img, 10, y+17, b.name, black)
		c := palette[i%len(palette)]
		for yy := y + 5; yy < y+rowH-5; yy++ {
			line(img, left, yy, px(b.value), yy, c)
		}
		text(img, px(b.value)+6, y+17, fmt.Sprintf("%.2f", b.value), black)
	}
	red := color.RGBA{0xd0, 0, 0, 255}
	line(img, px(1), top, px(1), h-40, red)
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return png.Encode(f, img)
}
