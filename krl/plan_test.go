package krl

import (
	"math"
	mrand "math/rand/v2"
	"testing"

	"golang.org/x/crypto/cryptobyte"
)

// bruteForceSize is the smallest serial encoding by a plain O(n²) search
// over the same choices planSerials makes.
func bruteForceSize(runs []SerialRange) int64 {
	const inf = int64(1) << 62
	n := len(runs)
	f := [2][]int64{make([]int64, n+1), make([]int64, n+1)}
	f[1][0] = inf
	for i := 1; i <= n; i++ {
		r := runs[i-1]
		for u := range 2 {
			f[u][i] = f[u][i-1] + rangeSize
			for j := 1; j <= i; j++ {
				span := r.Last - runs[j-1].First + 1
				if span <= MaxBitmapBits && f[u][j-1] < inf {
					f[u][i] = min(f[u][i], f[u][j-1]+bitmapHeader+int64(span/8))
				}
			}
		}
		if l := r.Last - r.First + 1; l <= 2 {
			f[1][i] = min(f[1][i], f[1][i-1]+8*int64(l), f[0][i-1]+listHeader+8*int64(l))
		}
	}
	return min(f[0][n], f[1][n])
}

func randomRuns(rng *mrand.Rand, n int, start uint64) []SerialRange {
	var runs []SerialRange
	next := start
	for range n {
		var length, gap uint64
		switch rng.IntN(10) {
		case 0:
			length = 1 + rng.Uint64N(40000)
		case 1, 2:
			length = 1 + rng.Uint64N(30)
		default:
			length = 1 + rng.Uint64N(3)
		}
		switch rng.IntN(6) {
		case 0:
			gap = 2 + rng.Uint64N(20000)
		case 1:
			gap = 2 + rng.Uint64N(200)
		default:
			gap = 2 + rng.Uint64N(8)
		}
		if next > math.MaxUint64-length-gap {
			break
		}
		runs = append(runs, SerialRange{next, next + length - 1})
		next += length - 1 + gap
	}
	return runs
}

// TestPlanOptimal: the sliding-window planner finds the same size as the
// brute-force search, the bytes written match it, and no bitmap is wider
// than MaxBitmapBits.
func TestPlanOptimal(t *testing.T) {
	rng := mrand.New(mrand.NewPCG(3, 4))
	for round := range 300 {
		start := 1 + rng.Uint64N(100)
		if round%5 == 0 {
			start = math.MaxUint64 - 2_000_000
		}
		runs := randomRuns(rng, 1+rng.IntN(200), start)
		b := cryptobyte.NewBuilder(nil)
		addSerials(b, runs)
		got := int64(len(b.BytesOrPanic()))
		if want := bruteForceSize(runs); got != want {
			t.Fatalf("round %d: %d bytes, brute force %d; runs %v", round, got, want, runs)
		}
		list, subs, ends := planSerials(runs)
		covered := len(list)
		for i, s := range subs {
			group := runs[s.start : ends[i]+1]
			covered += len(group)
			if s.enc == encBitmap && group[len(group)-1].Last-group[0].First+1 > MaxBitmapBits {
				t.Fatalf("round %d: bitmap of %d bits", round, group[len(group)-1].Last-group[0].First+1)
			}
		}
		if covered != len(runs) {
			t.Fatalf("round %d: plan covers %d of %d runs", round, covered, len(runs))
		}
	}
}

// TestPlanChoices pins the encoding of simple shapes.
func TestPlanChoices(t *testing.T) {
	every := func(first, last, step uint64) []SerialRange {
		var rs []SerialRange
		for s := first; s <= last; s += step {
			rs = append(rs, SerialRange{s, s})
		}
		return rs
	}
	for _, c := range []struct {
		name   string
		runs   []SerialRange
		types  string
		widths []int
	}{
		{"one serial", []SerialRange{{5, 5}}, "\x20", nil},
		{"two apart", []SerialRange{{5, 5}, {1 << 40, 1 << 40}}, "\x20", nil},
		{"contiguous", []SerialRange{{1, 1_000_000}}, "\x21", nil},
		{"short run", []SerialRange{{10, 14}}, "\x22", []int{5}},
		{"every other, 16384 bits", every(1, 16384, 2), "\x22", []int{16383}},
		{"every other, 2×16384 bits", every(1, 32768, 2), "\x22\x22", []int{16383, 16383}},
		{"every other to 16385", append(every(1, 16383, 2), SerialRange{16385, 16385}), "\x20\x22", []int{16383}},
	} {
		k := &KRL{}
		if err := k.CertsFor(nil).Serials.AddAll(c.runs); err != nil {
			t.Fatal(err)
		}
		b, err := k.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		types, widths := subsections(t, b)
		if string(types) != c.types || len(widths) != len(c.widths) {
			t.Errorf("%s: subsections %x widths %v, want %x %v", c.name, types, widths, c.types, c.widths)
			continue
		}
		for i := range widths {
			if widths[i] != c.widths[i] {
				t.Errorf("%s: bitmap widths %v, want %v", c.name, widths, c.widths)
			}
		}
	}
}
