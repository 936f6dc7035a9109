package seedfile

import "math/bits"

// index is a set of 64-bit keyed hashes, each with the line it was first seen on: the memory
// that grows with a file. Open addressing with linear probing over parallel arrays costs 12
// bytes a slot; capacity grows by half at 80% load, so an entry costs 15–23 bytes, about half
// a Go map[uint64]uint32 once that doubles past a power of two.
type index struct {
	keys  []uint64 // 0 marks an empty slot; stored keys are never 0
	lines []uint32
	n     int
}

// seen records h with line and reports the first line when h was already there.
func (x *index) seen(h uint64, line int) (int, bool) {
	if h == 0 {
		h = 1
	}
	if x.n >= len(x.keys)*4/5 {
		x.grow()
	}
	i := x.slot(h)
	for {
		switch x.keys[i] {
		case 0:
			x.keys[i], x.lines[i] = h, uint32(line)
			x.n++
			return 0, false
		case h:
			return int(x.lines[i]), true
		}
		if i++; i == len(x.keys) {
			i = 0
		}
	}
}

// slot maps h onto the table without a power-of-two size (Lemire's multiply-shift).
func (x *index) slot(h uint64) int {
	hi, _ := bits.Mul64(h, uint64(len(x.keys)))
	return int(hi)
}

func (x *index) grow() {
	old, oldLines := x.keys, x.lines
	size := len(old) + len(old)/2
	if size < 1024 {
		size = 1024
	}
	x.keys, x.lines = make([]uint64, size), make([]uint32, size)
	for j, h := range old {
		if h == 0 {
			continue
		}
		i := x.slot(h)
		for x.keys[i] != 0 {
			if i++; i == len(x.keys) {
				i = 0
			}
		}
		x.keys[i], x.lines[i] = h, oldLines[j]
	}
}
