package krl

import (
	"cmp"
	"errors"
	"fmt"
	"iter"
	"slices"
	"sort"
)

// SerialRange is the serials First through Last, both included.
type SerialRange struct {
	First uint64 `json:"first"`
	Last  uint64 `json:"last"`
}

func (r SerialRange) String() string {
	if r.First == r.Last {
		return fmt.Sprint(r.First)
	}
	return fmt.Sprintf("%d-%d", r.First, r.Last)
}

// ErrSerialZero is (wrapped in) the error for an attempt to revoke serial
// 0: OpenSSH refuses a KRL that does (serial 0 means "no serial"; sshd
// never checks it).
var ErrSerialZero = errors.New("serial 0 cannot be revoked")

// SerialSet is a set of certificate serial numbers, kept as sorted,
// disjoint, non-adjacent ranges. It never holds serial 0. The zero value
// is an empty set. Reads may run concurrently; writes may not.
type SerialSet struct {
	r []SerialRange
}

func checkRange(first, last uint64) error {
	if first == 0 {
		return ErrSerialZero
	}
	if first > last {
		return fmt.Errorf("serial range start %d > end %d", first, last)
	}
	return nil
}

// Add adds the serials first through last. It is cheapest in ascending
// order; for many unordered ranges use AddAll.
func (s *SerialSet) Add(first, last uint64) error {
	if err := checkRange(first, last); err != nil {
		return fmt.Errorf("krl: %w", err)
	}
	n := len(s.r)
	switch {
	case n == 0:
		s.r = append(s.r, SerialRange{first, last})
		return nil
	case s.r[n-1].Last == ^uint64(0):
	case first > s.r[n-1].Last+1: // after the last range: the common case
		s.r = append(s.r, SerialRange{first, last})
		return nil
	case first == s.r[n-1].Last+1:
		s.r[n-1].Last = last
		return nil
	}
	// i: the first range that ends at or after first-1 (it may touch).
	i := sort.Search(n, func(i int) bool { return s.r[i].Last >= first-1 })
	// j: one past the last range that starts at or before last+1.
	j := sort.Search(n, func(j int) bool { return last != ^uint64(0) && s.r[j].First > last+1 })
	if i == j {
		s.r = slices.Insert(s.r, i, SerialRange{first, last})
		return nil
	}
	merged := SerialRange{min(first, s.r[i].First), max(last, s.r[j-1].Last)}
	s.r[i] = merged
	s.r = slices.Delete(s.r, i+1, j)
	return nil
}

// AddAll adds many ranges at once, in any order, in O(n log n).
func (s *SerialSet) AddAll(ranges []SerialRange) error {
	for _, r := range ranges {
		if err := checkRange(r.First, r.Last); err != nil {
			return fmt.Errorf("krl: %w", err)
		}
	}
	all := append(slices.Clip(s.r), ranges...)
	slices.SortFunc(all, func(a, b SerialRange) int { return cmp.Compare(a.First, b.First) })
	s.r = coalesce(all)
	return nil
}

// coalesce merges overlapping and adjacent ranges of a slice sorted by
// First, in place.
func coalesce(rs []SerialRange) []SerialRange {
	out := rs[:0]
	for _, r := range rs {
		if n := len(out); n > 0 && (out[n-1].Last == ^uint64(0) || r.First <= out[n-1].Last+1) {
			out[n-1].Last = max(out[n-1].Last, r.Last)
			continue
		}
		out = append(out, r)
	}
	return slices.Clip(out)
}

// Contains reports whether serial is in the set.
func (s *SerialSet) Contains(serial uint64) bool {
	i := sort.Search(len(s.r), func(i int) bool { return s.r[i].Last >= serial })
	return i < len(s.r) && s.r[i].First <= serial
}

// Ranges yields the set's ranges in ascending order.
func (s *SerialSet) Ranges() iter.Seq[SerialRange] {
	return slices.Values(s.r)
}

// Len is the number of ranges.
func (s *SerialSet) Len() int { return len(s.r) }

// Count is the number of serials.
func (s *SerialSet) Count() uint64 {
	var n uint64
	for _, r := range s.r {
		n += r.Last - r.First + 1
	}
	return n
}

// Equal reports whether both sets hold the same serials.
func (s *SerialSet) Equal(o *SerialSet) bool { return slices.Equal(s.r, o.r) }
