package seedfile

import "math/bits"

// index is a set of 64-bit keyed hashes, each with the line it was first seen on: the memory
// that grows with a file. Open addressing with linear probing; a slot is three uint32s (key
// high, key low, line) side by side, so a probe touches one cache line and a slot costs 12
// bytes. Capacity grows by half at 80% load, so an entry costs 15–23 bytes, about half a Go
// map[uint64]uint32 once that doubles past a power of two.
type index struct {
	slots []uint32 // 3 per slot; key 0 marks an empty slot, so stored keys are never 0
	size  int      // slots
	n     int
}

// seen records h with line and reports the first line when h was already there.
func (x *index) seen(h uint64, line int) (int, bool) {
	if h == 0 {
		h = 1
	}
	if x.n >= x.size*4/5 {
		x.grow()
	}
	hi, lo := uint32(h>>32), uint32(h)
	i := x.slot(h)
	for {
		s := x.slots[3*i : 3*i+3 : 3*i+3]
		switch {
		case s[0] == 0 && s[1] == 0:
			s[0], s[1], s[2] = hi, lo, uint32(line)
			x.n++
			return 0, false
		case s[0] == hi && s[1] == lo:
			return int(s[2]), true
		}
		if i++; i == x.size {
			i = 0
		}
	}
}

// slot maps h onto the table without a power-of-two size (Lemire's multiply-shift).
func (x *index) slot(h uint64) int {
	hi, _ := bits.Mul64(h, uint64(x.size))
	return int(hi)
}

func (x *index) grow() {
	old := x.slots
	x.size += x.size / 2
	if x.size < 1024 {
		x.size = 1024
	}
	x.slots = make([]uint32, 3*x.size)
	for j := 0; j < len(old); j += 3 {
		if old[j] == 0 && old[j+1] == 0 {
			continue
		}
		i := x.slot(uint64(old[j])<<32 | uint64(old[j+1]))
		for x.slots[3*i] != 0 || x.slots[3*i+1] != 0 {
			if i++; i == x.size {
				i = 0
			}
		}
		copy(x.slots[3*i:3*i+3], old[j:j+3])
	}
}
